"""/api/v1/schedules: CRUD through the schedules service, plus pause, resume, trigger, preview
and the fire ledger."""

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from projects.models import Project
from sparkops.api.access import api_key_of
from sparkops.api.viewsets import UUID_PATTERN, ProjectScopedGenericViewSet, ProjectScopedViewSet, assign
from sparkops.roles import Role

from .. import cron, forecast, services
from ..choices import FireOutcome
from ..filtersets import ScheduleFilterSet
from ..freeze import FreezeOutcome, project_freeze, project_unfreeze
from ..models import Schedule
from .serializers import (
    ForecastSerializer,
    FreezeOutcomeSerializer,
    FreezeSerializer,
    PreviewSerializer,
    ScheduleFireSerializer,
    ScheduleSerializer,
    ScheduleWithForecastSerializer,
)

MAX_PREVIEW = 100
PERIOD = OpenApiParameter(
    "period",
    str,
    enum=forecast.PERIODS,
    description=f"The forecast's period from now: day, week or month (default {forecast.DEFAULT_PERIOD}).",
)
#: Answers that carry the schedule's forecast (null while it is disabled).
WITH_FORECAST = {"create", "update", "partial_update", "resume"}


@extend_schema_view(
    list=extend_schema(summary="List schedules"),
    create=extend_schema(summary="Create a schedule (admin); the answer carries its forecast", parameters=[PERIOD]),
    retrieve=extend_schema(summary="Get a schedule with its next fire time"),
    partial_update=extend_schema(
        summary="Edit a schedule (admin); beat sees it within seconds; with its forecast", parameters=[PERIOD]
    ),
    update=extend_schema(summary="Replace a schedule (admin); with its forecast", parameters=[PERIOD]),
    destroy=extend_schema(summary="Delete a schedule and its beat task (admin)"),
)
class ScheduleViewSet(ProjectScopedViewSet):
    """Cron schedules that fire workflow runs through Celery beat. Admins and owners write;
    developers and viewers read."""

    queryset = Schedule.objects.select_related("workflow")
    serializer_class = ScheduleSerializer
    filterset_class = ScheduleFilterSet
    search_fields = ["name", "cron"]
    ordering_fields = ["name", "next_fire_at", "created_at"]
    write_role = Role.ADMIN
    project_changes_ignored = True

    def get_serializer_class(self):
        return ScheduleWithForecastSerializer if self.action in WITH_FORECAST else super().get_serializer_class()

    def get_serializer_context(self) -> dict:
        context = super().get_serializer_context()
        if self.action in WITH_FORECAST:
            context["period"] = _period(self.request)
        return context

    def perform_create(self, serializer) -> None:
        data = dict(serializer.validated_data)
        serializer.instance = services.schedule_save(schedule=Schedule(**data, created_by=self.request.user))

    def perform_update(self, serializer) -> None:
        services.schedule_save(schedule=assign(serializer.instance, serializer.validated_data))

    def perform_destroy(self, instance: Schedule) -> None:
        services.schedule_delete(schedule=instance)

    @extend_schema(
        summary="Pause: no fire starts a run until resumed (admin)", request=None, responses=ScheduleSerializer
    )
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        schedule = services.schedule_set_enabled(
            schedule=self.get_object(), enabled=False, reason="Paused by a person."
        )
        return Response(self.get_serializer(schedule).data)

    @extend_schema(
        summary="Resume from now on; missed slots are not replayed (admin); with the forecast",
        request=None,
        parameters=[PERIOD],
        responses=ScheduleWithForecastSerializer,
    )
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        schedule = services.schedule_set_enabled(schedule=self.get_object(), enabled=True)
        return Response(self.get_serializer(schedule).data)

    @extend_schema(
        summary="Run now, recorded as a manual fire (admin)", request=None, responses={201: ScheduleFireSerializer}
    )
    @action(detail=True, methods=["post"])
    def trigger(self, request, pk=None):
        fire = services.trigger(schedule=self.get_object())
        return Response(ScheduleFireSerializer(fire).data, status=201)

    @extend_schema(
        summary="The next N fire times, in the schedule's timezone and in UTC",
        parameters=[
            OpenApiParameter(
                "n",
                {"type": "integer", "minimum": 1, "maximum": MAX_PREVIEW},
                description=f"How many (1-{MAX_PREVIEW}, default 10).",
            )
        ],
        responses=PreviewSerializer,
    )
    @action(detail=True, methods=["get"], filterset_class=None)
    def preview(self, request, pk=None):
        schedule = self.get_object()
        count = _bounded_int(request.query_params.get("n", "10"), "n", 1, MAX_PREVIEW)
        zone = cron.zone(schedule.timezone)
        fires = [
            {"local": instant.astimezone(zone).isoformat(), "utc": instant.isoformat()}
            for instant in services.preview(schedule, count, timezone.now())
        ]
        return Response({"timezone": schedule.timezone, "fires": fires})

    @extend_schema(
        summary="Forecast: fires in the period, expected and worst-case spend, budgets it would run out",
        parameters=[PERIOD],
        responses=ForecastSerializer,
    )
    @action(detail=True, methods=["get"], filterset_class=None)
    def forecast(self, request, pk=None):
        schedule = self.get_object()
        return Response(forecast.schedule_forecast(schedule=schedule, period=_period(request)))

    @extend_schema(
        summary="The schedule's fire ledger, newest first",
        parameters=[OpenApiParameter("outcome", str, enum=FireOutcome.values)],
        responses=ScheduleFireSerializer(many=True),
    )
    @action(detail=True, methods=["get"], filterset_class=None)
    def fires(self, request, pk=None):
        fires = self.get_object().fires.order_by("-nominal_time")
        if outcome := request.query_params.get("outcome"):
            fires = fires.filter(outcome=outcome)
        page = self.paginate_queryset(fires)
        return self.get_paginated_response(ScheduleFireSerializer(page, many=True).data)


def _bounded_int(raw: str, name: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise serializers.ValidationError({name: ["A whole number."]}) from None
    if not low <= value <= high:
        raise serializers.ValidationError({name: [f"Between {low} and {high}."]})
    return value


class ProjectFreezeViewSet(ProjectScopedGenericViewSet):
    """``POST /projects/{id}/freeze`` and ``/unfreeze``: the project's kill switch (admin)."""

    queryset = Project.objects.all()
    serializer_class = FreezeSerializer  # the request body (OPTIONS describes it)
    project_field = ""
    write_role = Role.ADMIN
    lookup_value_regex = UUID_PATTERN
    # A safety stop works on archived projects too: their runs still in flight are cancelled.
    writable_when_archived = frozenset({"freeze", "unfreeze"})

    @extend_schema(
        summary="Freeze: pause its schedules, cancel its runs, refuse new ones (admin)",
        request=FreezeSerializer,
        responses=FreezeOutcomeSerializer,
        tags=["projects"],
    )
    @action(detail=True, methods=["post"])
    def freeze(self, request, pk=None):
        project = self.get_object()
        payload = self.get_serializer(data=request.data)
        payload.is_valid(raise_exception=True)
        if payload.validated_data["revoke_api_keys"] and api_key_of(request) is not None:
            raise exceptions.PermissionDenied("An API key cannot revoke API keys; freeze with a user's token.")
        outcome = project_freeze(project=project, **payload.validated_data)
        return self._answer(project, outcome)

    @extend_schema(
        summary="Unfreeze: resume the schedules the freeze paused (admin)",
        request=None,
        responses=FreezeOutcomeSerializer,
        tags=["projects"],
    )
    @action(detail=True, methods=["post"])
    def unfreeze(self, request, pk=None):
        project = self.get_object()
        return self._answer(project, project_unfreeze(project=project))

    @staticmethod
    def _answer(project: Project, outcome: FreezeOutcome) -> Response:
        data = {"project": project.pk, "frozen_at": project.frozen_at, "frozen_reason": project.frozen_reason}
        return Response(FreezeOutcomeSerializer({**data, **vars(outcome)}).data)


def _period(request) -> str:
    period = request.query_params.get("period", forecast.DEFAULT_PERIOD)
    if period not in forecast.PERIODS:
        raise serializers.ValidationError({"period": [f"One of {', '.join(forecast.PERIODS)}."]})
    return period
