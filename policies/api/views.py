from django.db.models import Q
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import exceptions, mixins
from rest_framework.decorators import action
from rest_framework.response import Response

from agents.api.views import ToolViewSet
from sparkops.api.access import api_key_of, project_roles, requested_project_ids
from sparkops.api.pagination import CursorPagination
from sparkops.api.viewsets import ProjectScopedGenericViewSet, ProjectScopedViewSet, assign
from sparkops.roles import Role

from .. import selectors, services
from ..choices import PolicyKind
from ..filtersets import PolicyDecisionFilterSet, PolicyFilterSet, SpendEntryFilterSet
from ..models import Policy, PolicyDecision, SpendEntry
from .serializers import BudgetStatusSerializer, PolicyDecisionSerializer, PolicySerializer, SpendEntrySerializer

GLOBAL_ONLY_STAFF = "Only staff may create or change global policies."


class GuardedToolViewSet(ToolViewSet):
    """/tools, whose test runs answer to the project's allow-lists and approval rules."""

    def test_refusal(self, tool) -> str:
        role = self.caller_role(tool.project_id)
        return services.tool_test_refusal(tool=tool, role=role, is_staff=self.request.user.is_staff)


@extend_schema_view(
    list=extend_schema(summary="List policies: the project's and the global ones"),
    create=extend_schema(summary="Create a policy (admin; a global one: staff)"),
    retrieve=extend_schema(summary="Get a policy"),
    partial_update=extend_schema(summary="Update a policy (admin; a global one: staff)"),
    update=extend_schema(summary="Replace a policy (admin; a global one: staff)"),
    destroy=extend_schema(summary="Delete a policy (admin; a global one: staff)"),
)
class PolicyViewSet(ProjectScopedViewSet):
    """Budgets, run ceilings, rate and concurrency limits, allow-lists and approval rules. Members
    read their projects' policies and the global ones; admins change their project's; staff
    change global ones."""

    queryset = Policy.objects.select_related("project")
    serializer_class = PolicySerializer
    filterset_class = PolicyFilterSet
    search_fields = ["name", "description"]
    ordering_fields = ["name", "priority", "created_at", "kind"]
    write_role = Role.ADMIN

    def visible(self) -> Q:
        # Global policies act on every project, so every member may read them.
        return super().visible() | Q(project__isnull=True)

    def _is_staff(self) -> bool:
        return bool(self.request.user.is_staff) and api_key_of(self.request) is None

    def check_object_permissions(self, request, obj) -> None:
        if obj.project_id is None:
            if request.method not in ("GET", "HEAD", "OPTIONS") and not self._is_staff():
                raise exceptions.PermissionDenied(GLOBAL_ONLY_STAFF)
            return
        super().check_object_permissions(request, obj)

    def check_create_role(self, data: dict) -> None:
        if data.get("project") is None:  # a global policy
            if not self._is_staff():
                raise exceptions.PermissionDenied(GLOBAL_ONLY_STAFF)
            return
        super().check_create_role(data)

    def perform_create(self, serializer) -> None:
        policy = Policy(created_by=self.request.user, **serializer.validated_data)
        serializer.instance = services.policy_save(policy=policy)

    def perform_update(self, serializer) -> None:
        serializer.instance = services.policy_save(policy=assign(serializer.instance, serializer.validated_data))

    def perform_destroy(self, instance) -> None:
        instance.delete()

    @extend_schema(
        summary="A budget's spend in its current window",
        responses=BudgetStatusSerializer(many=True),
        description="For a project's budget: one status. For a global budget: one per project you are in.",
    )
    @action(detail=True, methods=["get"], filterset_class=None, pagination_class=None)
    def status(self, request, pk=None):
        policy = self.get_object()
        if policy.kind != PolicyKind.BUDGET:
            raise exceptions.ValidationError({"kind": [f"Only budgets have a spend status; this is a {policy.kind}."]})
        targets = [policy.project_id] if policy.project_id else sorted(project_roles(request), key=str)
        statuses = [selectors.budget_status(policy, project_id) for project_id in targets]
        return Response(BudgetStatusSerializer(statuses, many=True).data)


class BudgetViewSet(ProjectScopedGenericViewSet):
    """``GET /budgets``: every budget over the caller's projects with its current window."""

    filter_backends: list = []  # ?project= is the only filter, read by requested_project_ids
    pagination_class = None

    @extend_schema(
        summary="Budgets with spent, reserved, remaining and projected spend",
        responses=BudgetStatusSerializer(many=True),
        tags=["policies"],
    )
    def list(self, request):
        statuses = selectors.budgets_of(requested_project_ids(request))
        return Response(BudgetStatusSerializer(statuses, many=True).data)


@extend_schema_view(
    list=extend_schema(summary="Policy decisions: runs refused or held, calls blocked, warned, sent for approval")
)
class PolicyDecisionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedGenericViewSet):
    queryset = PolicyDecision.objects.select_related("policy")
    serializer_class = PolicyDecisionSerializer
    filterset_class = PolicyDecisionFilterSet
    pagination_class = CursorPagination
    ordering_fields = ["created_at"]


@extend_schema_view(list=extend_schema(summary="The spend ledger: one entry per provider call"))
class SpendEntryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedGenericViewSet):
    queryset = SpendEntry.objects.all()
    serializer_class = SpendEntrySerializer
    filterset_class = SpendEntryFilterSet
    pagination_class = CursorPagination
    ordering_fields = ["created_at"]
