from django.db import transaction
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from sparkops.api.access import api_key_of, role_in
from sparkops.api.pagination import CursorPagination
from sparkops.api.viewsets import UUID_PATTERN, ProjectScopedGenericViewSet
from sparkops.roles import Role
from workflows.models import Workflow
from workflows.selectors import version_of

from .. import services
from ..choices import Decision, Trigger
from ..filtersets import RunFilterSet
from ..models import Run, RunEvent
from .serializers import (
    DecisionSerializer,
    RunCreateSerializer,
    RunDetailSerializer,
    RunEventSerializer,
    RunFromWorkflowSerializer,
    RunRetrySerializer,
    RunSerializer,
    RunStepSerializer,
)

EVENTS_PAGE = 500
IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    location=OpenApiParameter.HEADER,
    required=False,
    description=(
        "Repeat a request with the same key to get the same run back (200) instead of a new one; "
        "the same key with a different request is refused (422)."
    ),
)
CONFLICT = {409: OpenApiResponse(description="The run is not in a state that allows this.")}
# What a run-creating request may be refused with besides bad input.
REFUSED = {
    422: OpenApiResponse(
        description="An exhausted budget refused the run, or the Idempotency-Key was used for a different request."
    ),
    429: OpenApiResponse(description="A rate limit refused the run; Retry-After says when to try again."),
}


def idempotency_key_of(request) -> str:
    return request.headers.get("Idempotency-Key", "")[:200]


def start_response(run: Run, created: bool, request) -> Response:
    data = RunDetailSerializer(run, context={"request": request}).data
    return Response(data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


@extend_schema_view(
    list=extend_schema(summary="List runs, newest first (cursor-paginated)"),
    retrieve=extend_schema(summary="Get a run with its steps"),
)
class RunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedGenericViewSet):
    """Executions of pinned workflow versions. Viewers read; developers start, cancel and retry;
    approvals need the role the step names (default admin)."""

    queryset = Run.objects.select_related("workflow_version")
    serializer_class = RunSerializer
    filterset_class = RunFilterSet
    pagination_class = CursorPagination
    ordering_fields = ["queued_at"]
    search_fields = ["title", "idempotency_key"]
    ordering = ("-queued_at", "-id")  # the cursor's order: newest queued first
    action_roles = {"approve": Role.VIEWER, "reject": Role.VIEWER}  # the step's own role is checked by the service
    writable_when_archived = frozenset({"cancel"})  # work still running in an archived project can be stopped

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action == "retrieve":
            queryset = queryset.prefetch_related("steps__agent", "steps__tool")
        return queryset

    def get_serializer_class(self):
        return RunDetailSerializer if self.action == "retrieve" else super().get_serializer_class()

    @extend_schema(
        summary="Start a run of a workflow's latest published version, or of a given version",
        request=RunCreateSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={201: RunDetailSerializer, 200: RunDetailSerializer, **REFUSED},
    )
    def create(self, request):
        payload = RunCreateSerializer(data=request.data, context=self.get_serializer_context())
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        workflow = data["workflow"]
        self.check_project_role(workflow.project_id, Role.DEVELOPER)
        run, created = services.run_start(
            workflow=workflow,
            version=data.get("workflow_version"),
            inputs=data["inputs"],
            user=request.user,
            trigger=Trigger.API,
            idempotency_key=idempotency_key_of(request),
            title=data["title"],
            priority=data["priority"],
            api_key=api_key_of(request),
        )
        return start_response(run, created, request)

    @extend_schema(
        summary="Cancel a run (harmless twice; 409 once finished)",
        request=None,
        responses={200: RunSerializer, **CONFLICT},
    )
    @action(detail=True, methods=["post", "patch"])
    def cancel(self, request, pk=None):
        run = self.get_object()
        run = services.run_cancel(run=run)
        return Response(RunSerializer(run, context=self.get_serializer_context()).data)

    @extend_schema(
        summary="Retry a failed or cancelled run, reusing the outputs of its succeeded steps",
        request=RunRetrySerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={201: RunDetailSerializer, 200: RunDetailSerializer, **CONFLICT, **REFUSED},
    )
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        run = self.get_object()
        payload = RunRetrySerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        retry, created = services.run_retry(
            run=run,
            user=request.user,
            inputs=payload.validated_data.get("inputs"),
            api_key=api_key_of(request),
            idempotency_key=idempotency_key_of(request),
        )
        return start_response(retry, created, request)

    @extend_schema(summary="The run's steps", responses=RunStepSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None, filterset_class=None)
    def steps(self, request, pk=None):
        run = self.get_object()
        steps = run.steps.select_related("agent", "tool").order_by("position")
        return Response(RunStepSerializer(steps, many=True).data)

    @extend_schema(
        summary="The run's events in order; ?after=<sequence> for the ones since",
        parameters=[OpenApiParameter("after", int, description="Only events with a higher sequence.")],
        responses=RunEventSerializer(many=True),
    )
    @action(detail=True, methods=["get"], pagination_class=None, filterset_class=None)
    def events(self, request, pk=None):
        run = self.get_object()
        try:
            after = int(request.query_params.get("after", 0))
        except ValueError:
            raise exceptions.ValidationError({"after": ["A whole number."]}) from None
        events = RunEvent.objects.filter(run=run, sequence__gt=after).select_related("step").order_by("sequence")
        return Response(RunEventSerializer(events[:EVENTS_PAGE], many=True).data)

    def _decide(self, request, key: str, decision: str) -> Response:
        run = self.get_object()
        payload = DecisionSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        with transaction.atomic():
            step = services.step_decide(
                run=run,
                key=key,
                user=request.user,
                role=role_in(request, run.project_id),
                decision=decision,
                comment=payload.validated_data["comment"],
            )
        return Response(RunStepSerializer(step).data)

    @extend_schema(
        summary="Approve a step waiting for approval",
        request=DecisionSerializer,
        responses={200: RunStepSerializer, **CONFLICT},
    )
    @action(detail=True, methods=["post"], url_path=r"steps/(?P<key>[a-z][a-z0-9_]*)/approve")
    def approve(self, request, pk=None, key=None):
        return self._decide(request, key, Decision.APPROVED)

    @extend_schema(
        summary="Reject a step waiting for approval (the run fails)",
        request=DecisionSerializer,
        responses={200: RunStepSerializer, **CONFLICT},
    )
    @action(detail=True, methods=["post"], url_path=r"steps/(?P<key>[a-z][a-z0-9_]*)/reject")
    def reject(self, request, pk=None, key=None):
        return self._decide(request, key, Decision.REJECTED)


class WorkflowRunViewSet(ProjectScopedGenericViewSet):
    """``POST /workflows/{id}/run``: the shortcut for starting a run of one workflow."""

    queryset = Workflow.objects.all()
    serializer_class = RunFromWorkflowSerializer  # the request body (OPTIONS describes it)
    lookup_value_regex = UUID_PATTERN

    @extend_schema(
        summary="Start a run of this workflow",
        request=RunFromWorkflowSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={201: RunDetailSerializer, 200: RunDetailSerializer, **REFUSED},
        tags=["runs"],
    )
    @action(detail=True, methods=["post"])
    def run(self, request, pk=None):
        workflow = self.get_object()
        payload = self.get_serializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        version = version_of(workflow, data["version"]) if "version" in data else None
        if "version" in data and version is None:
            raise exceptions.ValidationError({"version": f"Workflow has no version {data['version']}."})
        run, created = services.run_start(
            workflow=workflow,
            version=version,
            inputs=data["inputs"],
            user=request.user,
            trigger=Trigger.API,
            idempotency_key=idempotency_key_of(request),
            title=data["title"],
            api_key=api_key_of(request),
        )
        return start_response(run, created, request)
