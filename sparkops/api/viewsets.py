"""The one project-scoped base viewset every app's API builds on.

It limits each queryset to the caller's projects, checks the caller's role in the object's
project for each action, and answers 404 for anything in a project the caller is not in,
including through ``?project=``. Subclasses only name queryset, serializer, filterset and roles.
"""

import uuid

from rest_framework import exceptions, mixins, serializers, viewsets
from rest_framework.permissions import SAFE_METHODS

from projects.models import Project
from projects.services import project_require_writable
from sparkops.roles import Role

from .access import project_roles, role_in

NO_SUCH_PROJECT = "No such project."


def assign(instance, data: dict):
    """Set validated fields on an instance before a service saves it."""
    for name, value in data.items():
        setattr(instance, name, value)
    return instance


class ProjectField(serializers.PrimaryKeyRelatedField):
    """A project the caller is a member of; any other id reads as not existing."""

    def __init__(self, **kwargs):
        kwargs.setdefault("help_text", "Id of the project this belongs to.")
        kwargs.setdefault("pk_field", serializers.UUIDField())
        super().__init__(**kwargs)

    def get_queryset(self):
        request = self.context.get("request")
        ids = list(project_roles(request)) if request else []
        return Project.objects.filter(pk__in=ids)


class ProjectScopedGenericViewSet(viewsets.GenericViewSet):
    """The scoping and role checks, with no actions: mix in the ones an endpoint offers."""

    #: ORM path from the model to its Project; "" when the model is Project itself.
    project_field = "project"
    read_role = Role.VIEWER
    write_role = Role.DEVELOPER
    #: Per-action overrides of the role needed, e.g. {"destroy": Role.OWNER}.
    action_roles: dict[str, str] = {}
    #: Writes still allowed in an archived project (which is otherwise read-only), e.g. {"cancel"}.
    writable_when_archived: frozenset[str] = frozenset()

    # ---------------------------------------------------------------- scoping
    @property
    def project_id_path(self) -> str:
        return f"{self.project_field}_id" if self.project_field else "pk"

    def get_queryset(self):
        queryset = super().get_queryset()
        return queryset.filter(**{f"{self.project_id_path}__in": list(project_roles(self.request))})

    def filter_queryset(self, queryset):
        if self.project_field:
            self._check_project_param()
        return super().filter_queryset(queryset)

    def _check_project_param(self) -> None:
        raw = self.request.query_params.get("project")
        if not raw:
            return
        try:
            project_id = uuid.UUID(raw)
        except ValueError:
            raise exceptions.NotFound(NO_SUCH_PROJECT) from None
        if project_id not in project_roles(self.request):
            raise exceptions.NotFound(NO_SUCH_PROJECT)

    # ---------------------------------------------------------------- roles
    def required_role(self) -> str:
        if self.action in self.action_roles:
            return self.action_roles[self.action]
        return self.read_role if self.request.method in SAFE_METHODS else self.write_role

    def project_id_of(self, obj) -> uuid.UUID:
        if not self.project_field:
            return obj.pk
        *hops, last = self.project_field.split("__")
        for hop in hops:
            obj = getattr(obj, hop)
        return getattr(obj, f"{last}_id")

    def caller_role(self, project_id) -> str | None:
        return role_in(self.request, project_id)

    def check_project_role(self, project_id, role: str | None = None) -> str:
        """The caller's role in the project, if at least ``role``; else 404 or 403, or 409 for a
        write in an archived project."""
        needed = role or self.required_role()
        have = self.caller_role(project_id)
        if have is None:
            raise exceptions.NotFound(NO_SUCH_PROJECT)
        if not Role.at_least(have, needed):
            raise exceptions.PermissionDenied(f"This needs the {needed} role in the project; you have {have}.")
        if self.request.method not in SAFE_METHODS and self.action not in self.writable_when_archived:
            project_require_writable(project_id=project_id)
        return have

    def check_object_permissions(self, request, obj) -> None:
        super().check_object_permissions(request, obj)
        self.check_project_role(self.project_id_of(obj))

    def perform_create(self, serializer) -> None:
        self.check_project_role(serializer.validated_data["project"].pk)
        serializer.save()


class ProjectScopedViewSet(
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    mixins.ListModelMixin,
    ProjectScopedGenericViewSet,
):
    """Create, read, update, delete and list, scoped to the caller's projects."""
