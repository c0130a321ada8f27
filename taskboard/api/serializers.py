from rest_framework import serializers

from agents.models import Agent, ProviderCredential
from sparkops.api.viewsets import ProjectField, ScopedRelatedField

from ..choices import TaskPriority
from ..models import GitOperation, Sandbox, Task

TASK_FIELDS = ["title", "description", "priority", "agent", "repository_url", "base_branch", "credential"]


class TaskSerializer(serializers.ModelSerializer):
    project = ProjectField()
    agent = ScopedRelatedField(queryset=Agent.objects.all(), required=False, allow_null=True)
    credential = ScopedRelatedField(
        queryset=ProviderCredential.objects.all(),
        required=False,
        allow_null=True,
        help_text="A github credential (default: the project's first one) for pushing and the pull request.",
    )
    runs = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    # A CharField: empty until the pull request is open, which a "uri" format would not allow.
    pull_request_url = serializers.CharField(read_only=True, help_text="Set when the task ends in review.")

    class Meta:
        model = Task
        fields = [
            "id",
            "project",
            *TASK_FIELDS,
            "status",
            "branch",
            "pull_request_url",
            "error",
            "runs",
            "created_by",
            "created_at",
            "started_at",
            "completed_at",
        ]
        read_only_fields = ["id", "created_by", "created_at"]


class LenientPriorityField(serializers.ChoiceField):
    """A task priority; the numbers older clients of start-task send are still taken (below 0
    low, 0 medium, 1 to 9 high, 10 and up urgent)."""

    def __init__(self, **kwargs):
        super().__init__(choices=TaskPriority.choices, **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, int) and not isinstance(data, bool):
            return (
                TaskPriority.LOW
                if data < 0
                else [TaskPriority.MEDIUM, TaskPriority.HIGH, TaskPriority.URGENT][(data > 0) + (data >= 10)]
            )
        return super().to_internal_value(data)


class StartTaskSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=20000)
    priority = LenientPriorityField(required=False, default=TaskPriority.MEDIUM)
    repository_url = serializers.CharField(required=False, allow_blank=True, default="", max_length=500)
    base_branch = serializers.CharField(required=False, allow_blank=True, default="", max_length=200)
    credential = ScopedRelatedField(
        queryset=ProviderCredential.objects.all(), required=False, allow_null=True, default=None
    )


class SandboxSerializer(serializers.ModelSerializer):
    seconds_alive = serializers.FloatField(read_only=True, allow_null=True, help_text="Set once destroyed.")

    class Meta:
        model = Sandbox
        fields = [
            "id",
            "project",
            "agent",
            "task",
            "run",
            "provider",
            "external_id",
            "status",
            "repository_url",
            "branch",
            "limits",
            "last_error",
            "cost_usd",
            "seconds_alive",
            "created_at",
            "last_used_at",
            "destroyed_at",
        ]
        read_only_fields = fields


class GitOperationSerializer(serializers.ModelSerializer):
    class Meta:
        model = GitOperation
        fields = [
            "id",
            "sandbox",
            "task",
            "kind",
            "status",
            "detail",
            "commit_sha",
            "error",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields
