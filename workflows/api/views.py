from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from sparkops.api.viewsets import ProjectScopedViewSet
from sparkops.roles import Role

from .. import selectors, services
from ..filtersets import WorkflowFilterSet
from ..models import Workflow, WorkflowVersion
from .serializers import (
    ValidationResultSerializer,
    VersionDiffQuerySerializer,
    VersionDiffSerializer,
    WorkflowSerializer,
    WorkflowValidateSerializer,
    WorkflowVersionSerializer,
)

VERSION_PATH = r"versions/(?P<number>[0-9]{1,9})"
NUMBER = OpenApiParameter("number", OpenApiTypes.INT, OpenApiParameter.PATH, description="Version number, e.g. 2.")


@extend_schema_view(
    list=extend_schema(summary="List workflows (filter with ?project=, ?active=, ?slug=, ?search=)"),
    create=extend_schema(summary="Create a workflow and its version 1 (developer)"),
    retrieve=extend_schema(summary="Get a workflow with its newest definition"),
    partial_update=extend_schema(
        summary="Update a workflow (developer); a changed definition or input schema adds a version"
    ),
    update=extend_schema(summary="Replace a workflow (developer); a changed definition or input schema adds a version"),
    destroy=extend_schema(summary="Delete a workflow and its versions (developer)"),
)
class WorkflowViewSet(ProjectScopedViewSet):
    """Versioned DAGs of steps. Members read; developers write and publish."""

    queryset = Workflow.objects.all()
    serializer_class = WorkflowSerializer
    filterset_class = WorkflowFilterSet
    search_fields = ["name", "slug", "description"]
    ordering_fields = ["name", "slug", "created_at", "updated_at"]
    action_roles = {"validate": Role.VIEWER}  # it saves nothing, so any member may check a draft
    writable_when_archived = frozenset({"validate"})

    def get_queryset(self):
        return selectors.workflows_with_latest(super().get_queryset())

    def perform_create(self, serializer: WorkflowSerializer) -> None:
        serializer.instance = services.workflow_create(user=self.request.user, **serializer.validated_data)

    def perform_update(self, serializer: WorkflowSerializer) -> None:
        data = serializer.validated_data
        workflow = services.workflow_update(workflow=serializer.instance, user=self.request.user, **data)
        # Read again: the instance carries the newest version as prefetched before the edit.
        serializer.instance = self.get_queryset().get(pk=workflow.pk)

    def perform_destroy(self, instance: Workflow) -> None:
        services.workflow_delete(workflow=instance)

    # ---------------------------------------------------------------- verbs
    @extend_schema(
        summary="Check a definition and input schema without saving",
        request=WorkflowValidateSerializer,
        responses={200: ValidationResultSerializer},
    )
    @action(detail=False, methods=["post"], serializer_class=WorkflowValidateSerializer)
    def validate(self, request: Request) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        self.check_project_role(data["project"].pk)
        errors = services.definition_errors(
            project_id=data["project"].pk, definition=data["definition"], input_schema=data["input_schema"]
        )
        if errors:
            raise serializers.ValidationError(errors)
        return Response({"valid": True})

    @extend_schema(
        summary="List a workflow's versions, oldest first",
        operation_id="workflows_versions_list",
        responses=WorkflowVersionSerializer(many=True),
        filters=False,
    )
    @action(detail=True, methods=["get"], serializer_class=WorkflowVersionSerializer)
    def versions(self, request: Request, pk=None) -> Response:
        page = self.paginate_queryset(self.get_object().versions.order_by("number"))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        summary="Get one version of a workflow",
        operation_id="workflows_version_retrieve",
        parameters=[NUMBER],
        filters=False,
    )
    @action(detail=True, methods=["get"], url_path=VERSION_PATH, serializer_class=WorkflowVersionSerializer)
    def version(self, request: Request, pk=None, number: str = "") -> Response:
        return Response(self.get_serializer(self._version(number)).data)

    @extend_schema(
        summary="Publish a version (developer): it never changes again; publishing twice is harmless",
        operation_id="workflows_version_publish",
        request=None,
        parameters=[NUMBER],
        filters=False,
    )
    @action(
        detail=True, methods=["post"], url_path=f"{VERSION_PATH}/publish", serializer_class=WorkflowVersionSerializer
    )
    def publish(self, request: Request, pk=None, number: str = "") -> Response:
        version = services.version_publish(version=self._version(number))
        return Response(self.get_serializer(version).data)

    @extend_schema(
        summary="Compare two versions: steps added, removed and changed, and a text diff",
        parameters=[
            OpenApiParameter(
                "from", {"type": "integer", "minimum": 1}, required=True, description="The older version, e.g. 1."
            ),
            OpenApiParameter(
                "to", {"type": "integer", "minimum": 1}, required=True, description="The newer version, e.g. 2."
            ),
        ],
        filters=False,
    )
    @action(detail=True, methods=["get"], serializer_class=VersionDiffSerializer)
    def diff(self, request: Request, pk=None) -> Response:
        workflow = self.get_object()  # first: an outsider learns nothing from the parameters
        query = VersionDiffQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        old, new = (self._version_for_query(workflow, query.validated_data[name], name) for name in ("from", "to"))
        body = {"from": old.number, "to": new.number, **selectors.version_diff(old, new)}
        return Response(self.get_serializer(body).data)

    # ---------------------------------------------------------------- helpers
    def _version(self, number: str) -> WorkflowVersion:
        workflow = self.get_object()
        version = selectors.version_of(workflow, int(number))
        if version is None:
            raise exceptions.NotFound(f"This workflow has no version {number}.")
        version.workflow = workflow  # spares the service a query for the project
        return version

    @staticmethod
    def _version_for_query(workflow: Workflow, number: int, param: str) -> WorkflowVersion:
        version = selectors.version_of(workflow, number)
        if version is None:
            raise serializers.ValidationError({param: [f"This workflow has no version {number}."]})
        return version
