from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from sparkops.api.viewsets import ProjectField

from .. import kinds
from ..models import Policy, PolicyDecision, SpendEntry

_CONFIG_HELP = "Depends on the kind; examples: " + "; ".join(
    f"{kind.name}: {kind.example}" for kind in kinds.all_kinds()
)


class PolicySerializer(serializers.ModelSerializer):
    project = ProjectField(required=False, allow_null=True, help_text="Empty for a global policy (staff only).")
    config = serializers.JSONField(help_text=_CONFIG_HELP)

    class Meta:
        model = Policy
        fields = [
            "id",
            "project",
            "name",
            "kind",
            "config",
            "action",
            "enabled",
            "priority",
            "description",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_by", "created_at", "updated_at"]
        validators = []  # the model's constraints are checked by full_clean in the service

    def validate(self, attrs):
        """Run the model's own rules (config per kind, action per kind, unique names) for field-level
        errors, on the policy as it would be after this request."""
        self._refuse_immutable_changes(attrs)
        # An edit is checked in the policy's own project: the view refuses any move (ProjectScopedViewSet).
        kept = {"project": self.instance.project} if self.instance is not None else {}
        candidate = Policy(**{**self._current(), **attrs, **kept})
        # An edit checks uniqueness against the other rows, not against the row being edited.
        candidate._state.adding = self.instance is None
        try:
            candidate.full_clean(exclude=["created_by"])
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        return attrs

    def _refuse_immutable_changes(self, attrs) -> None:
        # Decisions, spend windows and the approvals it asked for were recorded under this kind;
        # a different rule is a new policy. (Nor does it move between projects: the view's base
        # refuses that for every endpoint.)
        if self.instance is not None and "kind" in attrs and attrs["kind"] != self.instance.kind:
            message = f"A policy never changes kind; create a new {attrs['kind']} policy instead."
            raise serializers.ValidationError({"kind": [message]})

    def _current(self) -> dict:
        if self.instance is None:
            return {}
        names = ["project", "name", "kind", "config", "action", "enabled", "priority", "description"]
        return {name: getattr(self.instance, name) for name in names} | {"pk": self.instance.pk}


class BudgetStatusSerializer(serializers.Serializer):
    policy = serializers.IntegerField(source="policy.pk")
    policy_name = serializers.CharField(source="policy.name")
    project = serializers.UUIDField(source="project_id")
    action = serializers.CharField(source="policy.action")
    enabled = serializers.BooleanField(source="policy.enabled")
    window = serializers.SerializerMethodField()
    amount_usd = serializers.DecimalField(source="amount", max_digits=14, decimal_places=6)
    spent_usd = serializers.DecimalField(source="spent", max_digits=14, decimal_places=6)
    reserved_usd = serializers.DecimalField(source="reserved", max_digits=14, decimal_places=6)
    remaining_usd = serializers.DecimalField(source="remaining", max_digits=14, decimal_places=6)
    projected_usd = serializers.DecimalField(
        source="projected", max_digits=14, decimal_places=6, help_text="Spend at the window's end at the rate so far."
    )
    window_start = serializers.DateTimeField()
    window_end = serializers.DateTimeField()
    exhausted = serializers.BooleanField()

    @extend_schema_field(serializers.CharField())
    def get_window(self, status) -> str:
        config = status.policy.config
        if config["window"] == "rolling":
            return f"rolling {config['days']} days"
        return f"{config['window']} ({config.get('timezone') or 'UTC'})"


class PolicyDecisionSerializer(serializers.ModelSerializer):
    policy_name = serializers.CharField(source="policy.name", default="", read_only=True)

    class Meta:
        model = PolicyDecision
        fields = ["id", "project", "policy", "policy_name", "run", "step", "stage", "outcome", "reason", "created_at"]


class SpendEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = SpendEntry
        fields = [
            "id",
            "project",
            "run",
            "step",
            "attempt",
            "workflow",
            "agent",
            "provider",
            "model",
            "status",
            "reserved_usd",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "price",
            "created_at",
            "settled_at",
        ]
