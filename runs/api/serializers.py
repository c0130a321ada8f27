from rest_framework import serializers

from sparkops.api.viewsets import ScopedRelatedField
from workflows.models import Workflow, WorkflowVersion

from ..models import Run, RunEvent, RunStep


class RunStepSerializer(serializers.ModelSerializer):
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
            "hold",
            "queued_at",
            "started_at",
            "finished_at",
            "lease_expires_at",
        ]
        read_only_fields = fields


class RunSerializer(serializers.ModelSerializer):
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
    workflow = ScopedRelatedField(
        queryset=Workflow.objects.all(),
        pk_field=serializers.UUIDField(),
        required=False,
        help_text="Runs its latest published version.",
    )
    workflow_version = ScopedRelatedField(
        queryset=WorkflowVersion.objects.select_related("workflow"),
        project_path="workflow__project",
        required=False,
        help_text="Id of a published version to pin instead.",
    )
    inputs = serializers.JSONField(
        required=False, default=dict, help_text='Checked against the version\'s input schema, e.g. {"topic": "solar"}.'
    )
    title = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    priority = serializers.IntegerField(required=False, default=0, min_value=-100, max_value=100)

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
