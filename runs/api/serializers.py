from rest_framework import serializers

from sparkops.api.serializers import FieldsBuiltOnce
from sparkops.api.viewsets import ScopedRelatedField
from workflows.models import Workflow, WorkflowVersion
from workflows.selectors import with_latest_published

from ..models import Run, RunEvent, RunStep


class RunStepSerializer(FieldsBuiltOnce, serializers.ModelSerializer):
    agent = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    tool = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)

    class Meta:
        model = RunStep
        fields = [
            "id",
            "key",
            "kind",
            "position",
            "status",
            "attempt",
            "max_attempts",
            "lost_workers",
            "input",
            "output",
            "error",
            "agent",
            "tool",
            "provider",
            "model",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "unpriced_calls",
            "latency_ms",
            "reused_from",
            "plan_reason",
            "hold",
            "queued_at",
            "started_at",
            "finished_at",
            "lease_expires_at",
        ]
        read_only_fields = fields


class RunSerializer(FieldsBuiltOnce, serializers.ModelSerializer):
    version = serializers.IntegerField(source="workflow_version.number", read_only=True)

    class Meta:
        model = Run
        fields = [
            "id",
            "project",
            "workflow",
            "workflow_version",
            "version",
            "trigger",
            "status",
            "title",
            "priority",
            "inputs",
            "outputs",
            "error",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "unpriced_calls",
            "parent",
            "from_step",
            "overrides",
            "idempotency_key",
            "task_agent",
            "waiting_on",
            "created_by",
            "queued_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class RunDetailSerializer(RunSerializer):
    steps = RunStepSerializer(many=True, read_only=True)

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "steps"]
        read_only_fields = fields


class RunCreateSerializer(serializers.Serializer):
    # With its project (the view's archived check) and the id of its newest published version
    # (run_start's pin, then read from the process's cache): no more round trips for either.
    workflow = ScopedRelatedField(
        queryset=with_latest_published(Workflow.objects.select_related("project")),
        pk_field=serializers.UUIDField(),
        required=False,
        help_text="Runs its latest published version.",
    )
    workflow_version = ScopedRelatedField(
        queryset=WorkflowVersion.objects.select_related("workflow__project"),
        project_path="workflow__project",
        required=False,
        help_text="Id of a published version to pin instead.",
    )
    inputs = serializers.JSONField(
        required=False, default=dict, help_text='Checked against the version\'s input schema, e.g. {"topic": "solar"}.'
    )
    title = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    priority = serializers.IntegerField(required=False, default=0, min_value=-100, max_value=100)
    dry_run = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Answer with the estimate and the admission verdict instead of starting the run; nothing is written.",
    )

    def validate(self, attrs: dict) -> dict:
        version = attrs.get("workflow_version")
        if version is None and attrs.get("workflow") is None:
            raise serializers.ValidationError({"workflow": "Give a workflow or a workflow_version."})
        attrs.setdefault("workflow", version.workflow if version else None)
        return attrs


class RunFromWorkflowSerializer(serializers.Serializer):
    inputs = serializers.JSONField(required=False, default=dict)
    version = serializers.IntegerField(
        required=False, min_value=1, help_text="A published version number; default the latest."
    )
    title = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")


def inputs_object(value):
    if not isinstance(value, dict):
        raise serializers.ValidationError('A JSON object, e.g. {"topic": "solar"}.')
    return value


class RunEstimateSerializer(RunCreateSerializer):
    """The body of POST /runs; ``dry_run`` is implied."""

    dry_run = None


class StepOverrideSerializer(serializers.Serializer):
    agent = serializers.SlugField(required=False, max_length=64, help_text="Another agent of the project, by slug.")
    model = serializers.CharField(
        required=False, max_length=140, help_text='A model of the agent\'s provider, e.g. "gpt-4o-mini".'
    )

    def to_internal_value(self, data):
        if isinstance(data, dict) and (unknown := set(data) - set(self.fields)):
            raise serializers.ValidationError({name: ["Not a field of an override."] for name in sorted(unknown)})
        return super().to_internal_value(data)

    def validate(self, attrs: dict) -> dict:
        if not attrs:
            raise serializers.ValidationError("Give agent, model or both.")
        return attrs


class RunReplaySerializer(serializers.Serializer):
    from_step = serializers.RegexField(
        r"^[a-z][a-z0-9_]*$",
        required=False,
        default="",
        max_length=64,
        help_text="This step and every step after it run again; the others are reused where nothing they read changed.",
    )
    inputs = serializers.JSONField(required=False, help_text="New inputs; default the replayed run's.")
    overrides = serializers.DictField(
        child=StepOverrideSerializer(),
        required=False,
        default=dict,
        help_text='Per agent step: {"summarize": {"model": "gpt-4o-mini"}} or {"draft": {"agent": "writer"}}.',
    )
    dry_run = serializers.BooleanField(
        required=False, default=False, help_text="Preview: which steps are reused, which run again, what it may cost."
    )

    def validate_inputs(self, value):
        return inputs_object(value)


class RunRetrySerializer(serializers.Serializer):
    inputs = serializers.JSONField(required=False, help_text="New inputs; default the failed run's.")


class DecisionSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class RunEventSerializer(serializers.ModelSerializer):
    step = serializers.SlugRelatedField(slug_field="key", read_only=True, allow_null=True)

    class Meta:
        model = RunEvent
        fields = ["sequence", "type", "step", "payload", "created_at"]
        read_only_fields = fields


# ------------------------------------------------------------------------------
# Estimates and replay previews (answers only: documented for the schema)
# ------------------------------------------------------------------------------
MONEY = {"allow_null": True, "help_text": 'USD as a decimal string, e.g. "0.001234"; null when a model is unpriced.'}


class WorstCaseSerializer(serializers.Serializer):
    cost_usd = serializers.CharField(**MONEY)
    priced_cost_usd = serializers.CharField(help_text="The priced steps alone.")
    tokens = serializers.IntegerField()
    calls = serializers.IntegerField()
    unpriced_models = serializers.ListField(child=serializers.CharField())


class ExpectedSerializer(serializers.Serializer):
    cost_usd_p50 = serializers.CharField()
    cost_usd_p95 = serializers.CharField()
    duration_ms_p50 = serializers.IntegerField()
    duration_ms_p95 = serializers.IntegerField()
    history_runs = serializers.IntegerField()
    basis = serializers.CharField(help_text='"history", or "history and worst case" when some steps have none.')


class AdmissionVerdictSerializer(serializers.Serializer):
    admitted = serializers.BooleanField()
    status_code = serializers.IntegerField(
        allow_null=True, help_text="What POST /runs would answer instead: 422, 429, 409."
    )
    reason = serializers.CharField()
    policy = serializers.DictField(allow_null=True)
    warnings = serializers.ListField(child=serializers.DictField())
    waits_for_slot = serializers.DictField(
        allow_null=True, help_text="The concurrency limit the run would wait on in the queue now, and why."
    )


class EstimateSerializer(serializers.Serializer):
    workflow = serializers.UUIDField()
    workflow_version = serializers.IntegerField()
    version = serializers.IntegerField()
    steps = serializers.ListField(
        child=serializers.DictField(),
        help_text="Per step: key, kind, agent, provider, model, price_id, calls, worst_case, expected, notes.",
    )
    worst_case = WorstCaseSerializer()
    expected = ExpectedSerializer(allow_null=True, help_text="null without history: the worst case alone.")
    limits = serializers.ListField(
        child=serializers.DictField(), help_text="Budgets and run ceilings the run would touch, and whether it fits."
    )
    admission = AdmissionVerdictSerializer()
    assumptions = serializers.ListField(child=serializers.CharField())


class DryRunSerializer(EstimateSerializer):
    dry_run = serializers.BooleanField(help_text="Always true: nothing was started.")


class StepPlanSerializer(serializers.Serializer):
    key = serializers.CharField()
    reuse = serializers.BooleanField()
    reason = serializers.CharField()


class ReplayPreviewSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    steps = StepPlanSerializer(many=True)
    estimate = EstimateSerializer(help_text="Of the steps that run again only.")


class WaitingApprovalSerializer(serializers.ModelSerializer):
    """A step waiting for a decision, as the approvals inbox lists it."""

    step = serializers.CharField(source="key", read_only=True)
    run = serializers.UUIDField(source="run_id", read_only=True)
    run_label = serializers.CharField(source="run.__str__", read_only=True)
    project = serializers.UUIDField(source="run.project_id", read_only=True)
    workflow = serializers.UUIDField(source="run.workflow_id", read_only=True)
    reason = serializers.SerializerMethodField(help_text="Why a policy parked it; empty for an approval gate.")
    role = serializers.SerializerMethodField(help_text="The least role that decides it, e.g. admin.")
    can_decide = serializers.SerializerMethodField(help_text="Whether the caller may approve or reject it.")
    approve_url = serializers.SerializerMethodField()
    reject_url = serializers.SerializerMethodField()

    class Meta:
        model = RunStep
        fields = [
            "id",
            "step",
            "kind",
            "run",
            "run_label",
            "project",
            "workflow",
            "reason",
            "role",
            "can_decide",
            "queued_at",
            "started_at",
            "approve_url",
            "reject_url",
        ]

    def get_reason(self, step: RunStep) -> str:
        return step.hold.get("reason", "") if isinstance(step.hold, dict) else ""

    def get_role(self, step: RunStep) -> str:
        return self.context["role_needed"](step)

    def get_can_decide(self, step: RunStep) -> bool:
        return self.context["may_decide"](step)

    def get_approve_url(self, step: RunStep) -> str:
        return f"/api/v1/runs/{step.run_id}/steps/{step.key}/approve"

    def get_reject_url(self, step: RunStep) -> str:
        return f"/api/v1/runs/{step.run_id}/steps/{step.key}/reject"
