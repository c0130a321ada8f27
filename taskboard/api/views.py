"""/api/v1/tasks, /api/v1/sandboxes and /agents/{id}/start-task: the task board's API."""

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from agents.models import Agent
from runs.api.views import IDEMPOTENCY_HEADER, REFUSED, idempotency_key_of
from sparkops.api.access import api_key_of
from sparkops.api.pagination import CursorPagination
from sparkops.api.viewsets import (
    UUID_PATTERN,
    ProjectScopedGenericViewSet,
    ScopedCreateModelMixin,
    ScopedUpdateModelMixin,
)

from .. import services
from ..filtersets import SandboxFilterSet, TaskFilterSet
from ..models import GitOperation, Sandbox, Task
from .serializers import GitOperationSerializer, SandboxSerializer, StartTaskSerializer, TaskSerializer

CONFLICT = {409: OpenApiResponse(description="The task is not in a state that allows this.")}


@extend_schema_view(
    list=extend_schema(summary="List tasks (filter with ?project=, ?status=, ?priority=, ?agent=)"),
    create=extend_schema(summary="Create a pending task (developer)"),
    retrieve=extend_schema(summary="Get a task with its branch, pull request and runs"),
    partial_update=extend_schema(
        summary="Edit a pending task: title, description, priority, assignee (developer)",
        responses={200: TaskSerializer, **CONFLICT},
    ),
)
class TaskViewSet(
    ScopedCreateModelMixin,
    mixins.RetrieveModelMixin,
    ScopedUpdateModelMixin,
    mixins.ListModelMixin,
    ProjectScopedGenericViewSet,
):
    """Work given to agents: each runs in a sandbox on a branch and ends with a pull request."""

    queryset = Task.objects.select_related("agent").prefetch_related("runs")
    serializer_class = TaskSerializer
    filterset_class = TaskFilterSet
    pagination_class = CursorPagination  # newest first; the board grows without bound
    search_fields = ["title", "description"]
    ordering_fields = ["created_at"]
    http_method_names = ["get", "post", "patch", "head", "options"]
    project_changes_ignored = True

    def perform_create(self, serializer) -> None:
        task = Task(**serializer.validated_data, created_by=self.request.user)
        serializer.instance = services.task_save(task=task)

    def perform_update(self, serializer) -> None:
        serializer.instance = services.task_update(task=serializer.instance, **serializer.validated_data)

    @extend_schema(
        summary="Start a pending task with its assignee (developer)",
        request=None,
        parameters=[IDEMPOTENCY_HEADER],
        responses={200: TaskSerializer, **CONFLICT, **REFUSED},
    )
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        task = services.task_start(
            task=self.get_object(),
            user=request.user,
            api_key=api_key_of(request),
            idempotency_key=idempotency_key_of(request),
        )
        return Response(self.get_serializer(task).data)

    @extend_schema(
        summary="Cancel a pending or running task; its sandbox is destroyed (developer)",
        request=None,
        responses={200: TaskSerializer, **CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        task = services.task_cancel(task=self.get_object())
        return Response(self.get_serializer(task).data)

    @extend_schema(summary="The task's git operations, oldest first", responses=GitOperationSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="git-operations", filterset_class=None, pagination_class=None)
    def git_operations(self, request, pk=None):
        operations = GitOperation.objects.filter(task=self.get_object())  # a handful per task
        return Response(GitOperationSerializer(operations, many=True).data)


@extend_schema_view(
    list=extend_schema(summary="List sandboxes (filter with ?project=, ?status=, ?task=, ?agent=, ?provider=)"),
    retrieve=extend_schema(summary="Get a sandbox with its limits, cost and lifetime"),
    destroy=extend_schema(
        summary="Destroy a sandbox now; the row stays as the record (developer)", responses={204: None}
    ),
)
class SandboxViewSet(
    mixins.RetrieveModelMixin, mixins.DestroyModelMixin, mixins.ListModelMixin, ProjectScopedGenericViewSet
):
    """Where tasks' agents work. Made by tasks; destroyed when the task ends, when idle too long,
    or on request."""

    queryset = Sandbox.objects.all()
    serializer_class = SandboxSerializer
    filterset_class = SandboxFilterSet
    pagination_class = CursorPagination
    ordering_fields = ["created_at"]

    def perform_destroy(self, instance: Sandbox) -> None:
        services.sandbox_destroy(sandbox=instance)

    @extend_schema(summary="The sandbox's git operations, oldest first", responses=GitOperationSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="git-operations", filterset_class=None, pagination_class=None)
    def git_operations(self, request, pk=None):
        operations = GitOperation.objects.filter(sandbox=self.get_object())
        return Response(GitOperationSerializer(operations, many=True).data)


class AgentStartTaskViewSet(ProjectScopedGenericViewSet):
    """``POST /agents/{id}/start-task``: a task for this agent, started at once."""

    queryset = Agent.objects.all()
    serializer_class = StartTaskSerializer  # the request body (OPTIONS describes it)
    lookup_value_regex = UUID_PATTERN

    @extend_schema(
        summary="Create a task for this agent and start it (developer)",
        request=StartTaskSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={201: TaskSerializer, 200: TaskSerializer, **REFUSED},
        tags=["tasks"],
    )
    @action(detail=True, methods=["post"], url_path="start-task")
    def start_task(self, request, pk=None):
        agent = self.get_object()
        payload = self.get_serializer(data=request.data)
        payload.is_valid(raise_exception=True)
        task, created = services.task_start_for_agent(
            agent=agent,
            user=request.user,
            api_key=api_key_of(request),
            idempotency_key=idempotency_key_of(request),
            **payload.validated_data,
        )
        data = TaskSerializer(task, context=self.get_serializer_context()).data
        return Response(data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)
