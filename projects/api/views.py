from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework.permissions import IsAuthenticated

from sparkops.api.permissions import DenyApiKeyProjects, DenyApiKeyWrites
from sparkops.api.viewsets import ProjectScopedViewSet
from sparkops.roles import Role

from .. import services
from ..filtersets import MembershipFilterSet, ProjectFilterSet
from ..models import Membership, Project
from .serializers import MembershipRoleSerializer, MembershipSerializer, ProjectSerializer


@extend_schema_view(
    list=extend_schema(summary="List the projects you are a member of"),
    create=extend_schema(summary="Create a project; you become its owner"),
    retrieve=extend_schema(summary="Get a project"),
    partial_update=extend_schema(summary="Update a project (admin)"),
    update=extend_schema(summary="Replace a project (admin)"),
    destroy=extend_schema(summary="Delete a project and everything in it (owner)"),
)
class ProjectViewSet(ProjectScopedViewSet):
    """Projects own everything else. Members read; admins edit; owners delete."""

    queryset = Project.objects.all()
    serializer_class = ProjectSerializer
    filterset_class = ProjectFilterSet
    search_fields = ["name", "slug", "description"]
    ordering_fields = ["name", "slug", "created_at"]
    project_field = ""
    write_role = Role.ADMIN
    action_roles = {"destroy": Role.OWNER}
    # The service decides: an archived project may be unarchived, and deleted when it has no runs.
    writable_when_archived = frozenset({"update", "partial_update", "destroy"})

    def get_permissions(self):
        # A key lives inside one project: it may not create new ones (it would own them).
        if self.action == "create":
            return [IsAuthenticated(), DenyApiKeyProjects()]
        return super().get_permissions()

    def perform_create(self, serializer) -> None:
        serializer.instance = services.project_create(user=self.request.user, **serializer.validated_data)

    def perform_update(self, serializer) -> None:
        services.project_update(project=serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance: Project) -> None:
        services.project_delete(project=instance)


@extend_schema_view(
    list=extend_schema(summary="List members (filter with ?project=)"),
    create=extend_schema(summary="Add a registered user to a project by email (admin)"),
    retrieve=extend_schema(summary="Get a membership"),
    partial_update=extend_schema(
        summary="Change a member's role (admin; owner role by owners only)", responses=MembershipSerializer
    ),
    update=extend_schema(
        summary="Change a member's role (admin; owner role by owners only)", responses=MembershipSerializer
    ),
    destroy=extend_schema(summary="Remove a member (admin), or leave a project yourself"),
)
class MembershipViewSet(ProjectScopedViewSet):
    """Who is in a project and with which role. Admins manage members; only owners touch owners."""

    queryset = Membership.objects.select_related("user")
    serializer_class = MembershipSerializer
    filterset_class = MembershipFilterSet
    search_fields = ["user__email", "user__name"]
    ordering_fields = ["created_at", "role", "user__email"]
    permission_classes = [IsAuthenticated, DenyApiKeyWrites]
    write_role = Role.ADMIN
    action_roles = {"destroy": Role.VIEWER}  # anyone may leave; the service checks the rest
    # Who may read an archived project's history stays manageable.
    writable_when_archived = frozenset({"create", "update", "partial_update", "destroy"})

    def get_serializer_class(self):
        if self.action in ("update", "partial_update"):
            return MembershipRoleSerializer
        return super().get_serializer_class()

    def perform_create(self, serializer) -> None:
        project = serializer.validated_data["project"]
        serializer.instance = services.membership_add(
            project=project,
            actor_role=self.caller_role(project.pk),
            email=serializer.validated_data["email"],
            role=serializer.validated_data["role"],
        )

    def perform_update(self, serializer) -> None:
        membership = serializer.instance
        if "role" not in serializer.validated_data:
            return  # a PATCH naming no field changes nothing, as on every other endpoint
        serializer.instance = services.membership_change_role(
            membership=membership,
            actor_role=self.caller_role(membership.project_id),
            role=serializer.validated_data["role"],
        )

    def perform_destroy(self, instance: Membership) -> None:
        services.membership_remove(
            membership=instance, actor=self.request.user, actor_role=self.caller_role(instance.project_id)
        )
