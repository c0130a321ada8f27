from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from sparkops.api.viewsets import ProjectField, ScopedRelatedField
from workflows.models import Workflow, WorkflowVersion

from .. import cron, forecast
from ..choices import CatchupPolicy, OverlapPolicy
from ..models import Schedule, ScheduleFire


class ScheduleSerializer(serializers.ModelSerializer):
    project = ProjectField()
    workflow = ScopedRelatedField(queryset=Workflow.objects.all(), pk_field=serializers.UUIDField())
    version = ScopedRelatedField(
        queryset=WorkflowVersion.objects.all(), project_path="workflow__project", required=False, allow_null=True
    )
    overlap_policy = serializers.ChoiceField(choices=OverlapPolicy.choices, default=OverlapPolicy.SKIP)
    catchup_policy = serializers.ChoiceField(choices=CatchupPolicy.choices, default=CatchupPolicy.SKIP_MISSED)
    description = serializers.SerializerMethodField(
        help_text='The cron in words, e.g. "At 09:00, Monday through Friday".'
    )

    class Meta:
        model = Schedule
        fields = [
            "id",
            "project",
            "workflow",
            "version",
            "name",
            "cron",
            "description",
            "timezone",
            "inputs",
            "enabled",
            "overlap_policy",
            "max_active",
            "catchup_policy",
            "catchup_window_seconds",
            "auto_pause_after",
            "jitter_seconds",
            "paused_reason",
            "last_fire_at",
            "next_fire_at",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "id",
            "paused_reason",
            "last_fire_at",
            "next_fire_at",
            "created_by",
            "created_at",
            "updated_at",
        ]

    def get_description(self, schedule: Schedule) -> str:
        return cron.describe(schedule.cron)


class ScheduleFireSerializer(serializers.ModelSerializer):
    class Meta:
        model = ScheduleFire
        fields = ["id", "nominal_time", "outcome", "reason", "manual", "run", "created_at"]
        read_only_fields = fields


class PreviewSerializer(serializers.Serializer):
    timezone = serializers.CharField()
    fires = serializers.ListField(child=serializers.DictField(), help_text='[{"local": "...", "utc": "..."}]')


class FreezeSerializer(serializers.Serializer):
    reason = serializers.CharField(
        max_length=500, help_text='Why, for the trail and the refusals, e.g. "runaway spend".'
    )
    revoke_api_keys = serializers.BooleanField(
        default=False, help_text="Also revoke every API key of the project (not allowed to a key)."
    )


class FreezeOutcomeSerializer(serializers.Serializer):
    project = serializers.UUIDField()
    frozen_at = serializers.DateTimeField(allow_null=True)
    frozen_reason = serializers.CharField(allow_blank=True)
    schedules = serializers.ListField(
        child=serializers.UUIDField(), help_text="Schedules the freeze paused, or the unfreeze resumed."
    )
    runs_cancelled = serializers.ListField(child=serializers.UUIDField())
    api_keys_revoked = serializers.ListField(child=serializers.UUIDField())


class ForecastSerializer(serializers.Serializer):
    """A schedule's forecast (answers only: documented for the schema)."""

    period = serializers.ChoiceField(choices=forecast.PERIODS)
    start = serializers.DateTimeField()
    end = serializers.DateTimeField(help_text="A day, a week or a month later on the schedule's local calendar.")
    timezone = serializers.CharField()
    enabled = serializers.BooleanField(help_text="The forecast is of the schedule as if enabled.")
    fires = serializers.IntegerField(help_text="Fires in [start, end), from our cron reading, DST included.")
    first_fire = serializers.DateTimeField(allow_null=True)
    last_fire = serializers.DateTimeField(allow_null=True)
    per_run = serializers.DictField(help_text="worst_case_usd, expected_usd, expected_from_history, unpriced_models.")
    spend = serializers.DictField(help_text="worst_case_usd and expected_usd over the period (null: unpriced).")
    budgets = serializers.ListField(
        child=serializers.DictField(),
        help_text="Each budget its runs count against: per window the spend projected with this schedule, "
        "and runs_out_at (expected) / runs_out_at_worst_case.",
    )
    warnings = serializers.ListField(child=serializers.CharField(), help_text="A warning never refuses the schedule.")


class ScheduleWithForecastSerializer(ScheduleSerializer):
    """A schedule as created, edited or resumed, with the forecast of what it will spend while
    enabled (null while disabled)."""

    forecast = serializers.SerializerMethodField()

    class Meta(ScheduleSerializer.Meta):
        fields = [*ScheduleSerializer.Meta.fields, "forecast"]

    @extend_schema_field(ForecastSerializer(allow_null=True))
    def get_forecast(self, schedule: Schedule) -> dict | None:
        if not schedule.enabled:
            return None
        return forecast.schedule_forecast(schedule=schedule, period=self.context.get("period", forecast.DEFAULT_PERIOD))
