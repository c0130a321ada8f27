from rest_framework import serializers

from sparkops.api.viewsets import ProjectField, ScopedRelatedField

from .. import providers
from ..choices import SERVICE_CREDENTIALS, WorkStatus
from ..models import Agent, ModelPrice, ProviderCredential, Tool
from ..selectors import price_in_force


class CredentialSerializer(serializers.ModelSerializer):
    project = ProjectField()
    provider = serializers.ChoiceField(choices=[*providers.choices(), *((name, name) for name in SERVICE_CREDENTIALS)])
    secret = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=True,
        style={"input_type": "password"},
        help_text="The provider API key. Write-only: never returned.",
    )
    has_secret = serializers.BooleanField(read_only=True)

    class Meta:
        model = ProviderCredential
        fields = [
            "id",
            "project",
            "name",
            "provider",
            "base_url",
            "secret",
            "has_secret",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_by", "created_at", "updated_at"]


class ToolSerializer(serializers.ModelSerializer):
    project = ProjectField()
    credential = ScopedRelatedField(queryset=ProviderCredential.objects.all(), required=False, allow_null=True)

    class Meta:
        model = Tool
        fields = [
            "id",
            "project",
            "name",
            "slug",
            "description",
            "kind",
            "input_schema",
            "config",
            "credential",
            "risk_class",
            "requires_approval",
            "enabled",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]


class AgentSerializer(serializers.ModelSerializer):
    project = ProjectField()
    provider = serializers.ChoiceField(choices=providers.choices())
    tools = ScopedRelatedField(queryset=Tool.objects.all(), many=True, required=False)
    credential = ScopedRelatedField(queryset=ProviderCredential.objects.all(), required=False, allow_null=True)
    # A method field, not a plain BooleanField: rows from create (and any unannotated agent)
    # have no is_priced attribute, and a BooleanField would silently drop the key.
    is_priced = serializers.SerializerMethodField(
        help_text="False when no price is known for the model: its cost cannot be counted."
    )
    health = serializers.SerializerMethodField()
    work_status = serializers.ChoiceField(
        choices=WorkStatus.choices, read_only=True, help_text="busy while one of its tasks is in progress, else idle."
    )
    current_task = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, pk_field=serializers.UUIDField(), help_text="The task in progress, if any."
    )

    class Meta:
        model = Agent
        fields = [
            "id",
            "project",
            "name",
            "slug",
            "description",
            "role",
            "provider",
            "model",
            "system_prompt",
            "parameters",
            "tools",
            "credential",
            "max_tool_iterations",
            "status",
            "avatar_url",
            "work_status",
            "current_task",
            "is_priced",
            "health",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]

    def get_is_priced(self, agent: Agent) -> bool:
        annotated = getattr(agent, "is_priced", None)  # lists annotate it in the same query
        if annotated is not None:
            return annotated
        return price_in_force(provider=agent.provider, model=agent.model) is not None

    def get_health(self, agent: Agent) -> dict:
        return {
            "status": agent.health_status,
            "latency_ms": agent.health_latency_ms,
            "error": agent.health_error,
            "checked_at": agent.health_checked_at,
        }


class AgentHealthSerializer(serializers.Serializer):
    status = serializers.CharField()
    latency_ms = serializers.FloatField(allow_null=True)
    error = serializers.CharField(allow_blank=True)
    checked_at = serializers.DateTimeField()


class ToolTestRequestSerializer(serializers.Serializer):
    input = serializers.JSONField(
        help_text='Arguments for the tool, checked against its input schema, e.g. {"q": "refunds"}.'
    )


class ToolTestResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    output = serializers.JSONField(required=False)
    error = serializers.CharField(required=False)
    permanent = serializers.BooleanField(required=False)
    latency_ms = serializers.FloatField(required=False)


class ModelPriceSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelPrice
        fields = ["id", "provider", "model", "input_usd_per_mtok", "output_usd_per_mtok", "effective_from"]
