import json

import django_filters
from django.db import transaction
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
)
from rest_framework import exceptions, mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from projects.services import ProjectArchived
from sparkops.api.access import api_key_of, role_in
from sparkops.api.pagination import CursorPagination
from sparkops.api.viewsets import UUID_PATTERN, ProjectScopedGenericViewSet
from sparkops.roles import Role
from workflows.models import Workflow
from workflows.selectors import version_of

from .. import estimates, replay, services
from ..choices import Decision, RunStatus, StepStatus, Trigger
from ..filtersets import RunFilterSet
from ..models import Run, RunEvent, RunStep
from .serializers import (
    DecisionSerializer,
    DryRunSerializer,
    EstimateSerializer,
    ReplayPreviewSerializer,
    RunCreateSerializer,
    RunDetailSerializer,
    RunEstimateSerializer,
    RunEventSerializer,
    RunFromWorkflowSerializer,
    RunReplaySerializer,
    RunRetrySerializer,
    RunSerializer,
    RunStepSerializer,
    WaitingApprovalSerializer,
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


STARTED_OR_DRY_RUN = PolymorphicProxySerializer(
    component_name="RunOrDryRun",
    serializers=[RunDetailSerializer, DryRunSerializer],
    resource_type_field_name=None,
)


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
    # approve, reject: the step's own role is checked by the service. estimate writes nothing.
    action_roles = {"approve": Role.VIEWER, "reject": Role.VIEWER, "estimate": Role.VIEWER}
    # Work still running in an archived project can be stopped; an estimate there says it would be refused.
    # create checks the workflow's project itself, read along with the workflow.
    writable_when_archived = frozenset({"cancel", "estimate", "create"})

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
        responses={
            201: RunDetailSerializer,
            200: OpenApiResponse(
                STARTED_OR_DRY_RUN,
                description="The run a repeated Idempotency-Key created; or, with dry_run, the estimate and verdict.",
            ),
            **REFUSED,
        },
    )
    def create(self, request):
        payload = RunCreateSerializer(data=request.data, context=self.get_serializer_context())
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        workflow = data["workflow"]
        self.check_project_role(workflow.project_id, Role.DEVELOPER)
        if workflow.project.archived:  # read with the workflow; run_start checks again in its own read
            raise ProjectArchived(workflow.project_id)
        if data["dry_run"]:
            estimate = estimates.estimate_start(
                workflow=workflow,
                version=data.get("workflow_version"),
                inputs=data["inputs"],
                api_key=api_key_of(request),
            )
            return Response({"dry_run": True, **estimate})
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
            project=workflow.project,  # read with the workflow, for this request
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

    @extend_schema(
        summary="Estimate a run before starting it: worst case, expected cost and duration, limits, admission",
        request=RunEstimateSerializer,
        responses={200: EstimateSerializer},
    )
    @action(detail=False, methods=["post"])
    def estimate(self, request):
        payload = RunEstimateSerializer(data=request.data, context=self.get_serializer_context())
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        self.check_project_role(data["workflow"].project_id, Role.VIEWER)
        return Response(
            estimates.estimate_start(
                workflow=data["workflow"],
                version=data.get("workflow_version"),
                inputs=data["inputs"],
                api_key=api_key_of(request),
            )
        )

    @extend_schema(
        summary="Replay a finished run from a step, with new inputs and per-step agent or model overrides",
        request=RunReplaySerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={
            201: RunDetailSerializer,
            200: OpenApiResponse(
                PolymorphicProxySerializer(
                    component_name="ReplayOrPreview",
                    serializers=[RunDetailSerializer, ReplayPreviewSerializer],
                    resource_type_field_name=None,
                ),
                description="The replay a repeated Idempotency-Key created; or, with dry_run, the preview.",
            ),
            **CONFLICT,
            **REFUSED,
        },
    )
    @action(detail=True, methods=["post"])
    def replay(self, request, pk=None):
        run = self.get_object()
        payload = RunReplaySerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        asked = {"from_step": data["from_step"], "inputs": data.get("inputs"), "overrides": data["overrides"]}
        if data["dry_run"]:
            return Response(replay.replay_preview(run=run, api_key=api_key_of(request), **asked))
        made, created = replay.run_replay(
            run=run,
            user=request.user,
            api_key=api_key_of(request),
            idempotency_key=idempotency_key_of(request),
            **asked,
        )
        return start_response(made, created, request)

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

    @extend_schema(
        summary="Estimate a run of this workflow: worst case, expected cost and duration, limits, admission",
        parameters=[
            OpenApiParameter("version", int, description="A published version number; default the latest."),
            OpenApiParameter("inputs", str, description='The run\'s inputs as JSON, e.g. {"topic": "solar"}.'),
        ],
        responses={200: EstimateSerializer},
        tags=["runs"],
    )
    @action(detail=True, methods=["get"])
    def estimate(self, request, pk=None):
        workflow = self.get_object()
        version = _version_param(workflow, request.query_params.get("version"))
        inputs = _inputs_param(request.query_params.get("inputs", "{}"))
        return Response(
            estimates.estimate_start(workflow=workflow, version=version, inputs=inputs, api_key=api_key_of(request))
        )


def _version_param(workflow: Workflow, raw: str | None):
    if raw is None:
        return None
    version = version_of(workflow, int(raw)) if raw.isdigit() and len(raw) < 10 else None
    if version is None:
        raise exceptions.ValidationError({"version": [f"Workflow has no version {raw!r}."]})
    return version


def _inputs_param(raw: str) -> dict:
    try:
        inputs = json.loads(raw)
    except (ValueError, RecursionError):
        inputs = None
    if not isinstance(inputs, dict):
        raise exceptions.ValidationError({"inputs": ['A JSON object, e.g. {"topic": "solar"}.']})
    return inputs


class WaitingApprovalFilterSet(django_filters.FilterSet):
    project = django_filters.UUIDFilter(field_name="run__project")
    workflow = django_filters.UUIDFilter(field_name="run__workflow")
    run = django_filters.UUIDFilter(field_name="run")
    kind = django_filters.CharFilter(help_text="approval (a gate) or the kind of a step a policy parked, e.g. agent.")

    class Meta:
        model = RunStep
        fields = ["project", "workflow", "run", "kind"]


@extend_schema_view(
    list=extend_schema(
        summary="Steps waiting for approval across the caller's projects, newest first (cursor-paginated)",
        tags=["runs"],
    )
)
class WaitingApprovalViewSet(mixins.ListModelMixin, ProjectScopedGenericViewSet):
    """The approvals inbox: what waits for a decision in the caller's projects. ``can_decide`` says
    whether the caller's role (or key's) is enough for each; decide with its approve or reject URL."""

    # Waiting steps belong to active runs: reading them through the runs' active index keeps the
    # inbox off the steps table's millions of settled rows.
    queryset = RunStep.objects.filter(
        status=StepStatus.WAITING_APPROVAL, run__status__in=[RunStatus.RUNNING, RunStatus.WAITING_APPROVAL]
    ).select_related("run__workflow", "run__workflow_version")
    serializer_class = WaitingApprovalSerializer
    filterset_class = WaitingApprovalFilterSet
    pagination_class = CursorPagination
    project_field = "run__project"
    ordering_fields = ["id"]
    ordering = ("-id",)

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "role_needed": self._needed, "may_decide": self._may_decide}

    def _needed(self, step: RunStep) -> str:
        return services.approver_role(step.run, step.key, step)

    def _may_decide(self, step: RunStep) -> bool:
        if step.hold.get("staff_only") and not self.request.user.is_staff:
            return False
        return Role.at_least(role_in(self.request, step.run.project_id), self._needed(step))
