from django.db.models import Q
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins

from sparkops.api.access import project_roles, requested_project_ids
from sparkops.api.pagination import CursorPagination
from sparkops.api.viewsets import ProjectScopedGenericViewSet
from sparkops.roles import Role

from ..filtersets import AuditEntryFilterSet
from ..models import AuditEntry
from .serializers import AuditEntrySerializer


@extend_schema_view(
    list=extend_schema(summary="Who changed what, when and how, in the projects you administer (admin)"),
    retrieve=extend_schema(summary="One audit entry (admin)"),
)
class AuditEntryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedGenericViewSet):
    """The audit trail: read-only, for the admins and owners of a project."""

    queryset = AuditEntry.objects.all()
    serializer_class = AuditEntrySerializer
    filterset_class = AuditEntryFilterSet
    pagination_class = CursorPagination
    ordering = ("-at", "-id")
    ordering_fields = ["at"]
    search_fields = ["object_repr", "actor_label"]
    read_role = Role.ADMIN

    def visible(self) -> Q:
        roles = project_roles(self.request)
        return Q(project_id__in=[pid for pid, role in roles.items() if Role.at_least(role, Role.ADMIN)])

    def _check_project_param(self) -> None:
        # A project the caller is in but does not administer: 403, not an empty list.
        for project_id in requested_project_ids(self.request) if self.request.query_params.get("project") else []:
            self.check_project_role(project_id)
