"""``GET /api/v1/metrics``: runs, durations, spend and policy decisions of the caller's projects."""

from datetime import UTC, datetime, time, timedelta

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from policies.choices import Outcome
from runs.choices import RunStatus
from sparkops.api.access import requested_project_ids

from .. import metrics

DEFAULT_SPAN = timedelta(days=7)
BAD_SINCE = "Enter an ISO 8601 date or date-time, e.g. 2026-11-01 or 2026-11-01T09:30:00Z."


class MetricsQuerySerializer(serializers.Serializer):
    project = serializers.UUIDField(
        required=False, help_text="Limit to one project; default: every project you are a member of."
    )
    since = serializers.CharField(
        required=False,
        help_text="Count from this date (00:00 UTC) or date-time; default: 7 days ago. e.g. 2026-11-01",
    )

    def validate_since(self, value: str) -> datetime:
        try:
            moment = parse_datetime(value)
            day = None if moment else parse_date(value)
        except ValueError:  # well formed but impossible, e.g. 2026-02-30
            moment = day = None
        if day is not None:
            moment = datetime.combine(day, time.min, tzinfo=UTC)
        if moment is None:
            raise serializers.ValidationError(BAD_SINCE)
        return moment if timezone.is_aware(moment) else moment.replace(tzinfo=UTC)


# ---------------------------------------------------------------- the answer (documentation)
def _counts_of(name: str, keys: list[str], help_text: str) -> serializers.Serializer:
    """A count per status or outcome, every key present (zero included)."""
    fields = {key: serializers.IntegerField() for key in keys}
    return type(name, (serializers.Serializer,), fields)(help_text=help_text)


class DurationSerializer(serializers.Serializer):
    p50 = serializers.FloatField(
        allow_null=True,
        help_text="Median in ms, from log-scale histograms (within 4.5% of the exact value); null with no rows.",
    )
    p95 = serializers.FloatField(allow_null=True)
    count = serializers.IntegerField(help_text="Rows the percentiles were computed from: all of them.")
    sampled = serializers.BooleanField(help_text="Always false: every row is counted (kept for compatibility).")


class SpendFiguresSerializer(serializers.Serializer):
    cost_usd = serializers.DecimalField(
        max_digits=20, decimal_places=6, help_text="Actual cost once settled; the reservation until then."
    )
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    tokens = serializers.IntegerField()
    calls = serializers.IntegerField()
    unpriced_calls = serializers.IntegerField(help_text="Calls to models with no known price (no cost counted).")


class SpendByDaySerializer(SpendFiguresSerializer):
    day = serializers.DateField(help_text="UTC day.")


class SpendByAgentSerializer(SpendFiguresSerializer):
    agent = serializers.UUIDField(allow_null=True, help_text="Null for a deleted agent.")
    slug = serializers.CharField(allow_null=True)


class SpendByModelSerializer(SpendFiguresSerializer):
    provider = serializers.CharField()
    model = serializers.CharField()


class SpendByWorkflowSerializer(SpendFiguresSerializer):
    workflow = serializers.UUIDField(allow_null=True, help_text="Null for agent tasks and deleted workflows.")
    slug = serializers.CharField(allow_null=True)


class SpendSerializer(serializers.Serializer):
    total = SpendFiguresSerializer()
    by_day = SpendByDaySerializer(many=True)
    by_agent = SpendByAgentSerializer(many=True)
    by_model = SpendByModelSerializer(many=True)
    by_workflow = SpendByWorkflowSerializer(many=True)


class RunMetricsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    by_status = _counts_of("RunCountsSerializer", RunStatus.values, "Runs queued in the span, by current status.")
    success_rate = serializers.FloatField(
        allow_null=True, help_text="Succeeded / finished (succeeded, failed, cancelled); null when none finished."
    )
    duration_ms = DurationSerializer(help_text="finished_at - started_at of the runs that started and finished.")


class StepMetricsSerializer(serializers.Serializer):
    duration_ms = DurationSerializer(help_text="finished_at - started_at of those runs' steps.")


class DecisionMetricsSerializer(serializers.Serializer):
    by_outcome = _counts_of("DecisionCountsSerializer", Outcome.values, "Policy decisions in the span, by outcome.")


class MetricsSerializer(serializers.Serializer):
    project = serializers.UUIDField(allow_null=True, help_text="The project asked for; null for all yours.")
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    runs = RunMetricsSerializer()
    steps = StepMetricsSerializer()
    spend = SpendSerializer()
    policy_decisions = DecisionMetricsSerializer()


# ---------------------------------------------------------------- the view
class MetricsView(APIView):
    """Runs by status, success rate, p50/p95 durations, spend and tokens, and policy decisions of
    the caller's projects (or one of them). Runs count from when they were queued; spend entries
    and decisions from when they were written."""

    @extend_schema(
        summary="Run, spend and policy metrics of your projects",
        parameters=[MetricsQuerySerializer],
        responses=MetricsSerializer,
        tags=["metrics"],
    )
    def get(self, request):
        project_ids = requested_project_ids(request)
        query = MetricsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        now = timezone.now()
        since = query.validated_data.get("since") or now - DEFAULT_SPAN
        body = {
            "project": query.validated_data.get("project"),
            "since": since,
            "until": now,
            **metrics.project_metrics(project_ids, since, now),
        }
        return Response(MetricsSerializer(body).data)
