"""The one project-scoped base viewset every app's API builds on.

It limits each queryset to the caller's projects, checks the caller's role in the object's
project for each action, and answers 404 for anything in a project the caller is not in,
including through ``?project=``. A create is checked against the role in the new object's
project and an update never moves an object to another project, before the view's own
``perform_create``/``perform_update`` (which only save). Subclasses only name queryset,
serializer, filterset and roles; their serializers point at project-scoped rows with
``ScopedRelatedField`` (``ProjectField`` for the project itself).
"""

import uuid

import structlog
from django.db.models import Q
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.permissions import SAFE_METHODS
from rest_framework.response import Response

from projects.models import Project
from projects.services import project_require_writable
from sparkops.roles import Role

from .access import NO_SUCH_PROJECT, project_roles, requested_project_ids, role_in

#: A UUID in a route; anything else answers 404 without reaching the database.
UUID_PATTERN = "[0-9a-fA-F-]{36}"


def assign(instance, data: dict):
    """Set validated fields on an instance before a service saves it."""
    for name, value in data.items():
        setattr(instance, name, value)
    return instance


class ScopedRelatedField(serializers.PrimaryKeyRelatedField):
    """A row of one of the caller's projects; any other id reads as not existing, with the same
    message as an id that exists nowhere. Every field that points at a project-scoped object is
    one of these, ``project`` itself included (``ProjectField``).

    ``project_path`` is the ORM path from the field's model to its project, e.g.
    ``"workflow__project"`` for a workflow version."""

    def __init__(self, *, project_path: str = "project", **kwargs):
        self.project_path = project_path
        super().__init__(**kwargs)

    def get_queryset(self):
        request = self.context.get("request")
        ids = list(project_roles(request)) if request else []
        return super().get_queryset().filter(**{f"{self.project_path}__in": ids})


class ProjectField(ScopedRelatedField):
    """A project the caller is a member of."""

    def __init__(self, **kwargs):
        kwargs.setdefault("help_text", "Id of the project this belongs to.")
        kwargs.setdefault("pk_field", serializers.UUIDField())
        kwargs.setdefault("queryset", Project.objects.all())
        super().__init__(project_path="pk", **kwargs)


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
    #: An object never moves between projects. By default an update naming another project is
    #: refused (400 on ``project``); endpoints that have always answered it by keeping the
    #: object where it is (200) set this.
    project_changes_ignored = False

    # ---------------------------------------------------------------- scoping
    @property
    def project_id_path(self) -> str:
        return f"{self.project_field}_id" if self.project_field else "pk"

    def get_queryset(self):
        return super().get_queryset().filter(self.visible())

    def visible(self) -> Q:
        """The rows the caller may see: those of their projects. A model with rows outside any
        project (global policies) widens this, and only this."""
        return Q(**{f"{self.project_id_path}__in": list(project_roles(self.request))})

    def filter_queryset(self, queryset):
        if self.project_field:
            self._check_project_param()
        return super().filter_queryset(queryset)

    def _check_project_param(self) -> None:
        requested_project_ids(self.request)  # 404 for ?project= naming a project not the caller's

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
        structlog.contextvars.bind_contextvars(project=str(project_id))  # on the request's log lines
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

    # ---------------------------------------------------------------- writes
    def check_create_role(self, data: dict) -> None:
        """Before a create is saved: the caller's role in the new object's project allows it
        (404 for a project that is not theirs, 403 below the role, 409 when archived)."""
        if self.project_field:  # anyone may create a project: its creator becomes its owner
            self.check_project_role(data[self.project_field].pk)

    def keep_project(self, serializer) -> None:
        """Before an update is saved: ``project`` leaves the validated data, so no service ever
        sees a move; naming another project is refused unless ``project_changes_ignored``."""
        data = serializer.validated_data
        if self.project_field != "project" or "project" not in data:
            return
        new_id = getattr(data.pop("project"), "pk", None)
        if new_id != serializer.instance.project_id and not self.project_changes_ignored:
            name = serializer.instance._meta.verbose_name
            article = "An" if name[0] in "aeiou" else "A"
            raise exceptions.ValidationError({"project": [f"{article} {name} cannot move to another project."]})


class ScopedCreateModelMixin(mixins.CreateModelMixin):
    """DRF's create with the create-role check between validation and saving, so a view's own
    ``perform_create`` only saves."""

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        self.check_create_role(serializer.validated_data)
        self.perform_create(serializer)
        return Response(
            serializer.data, status=status.HTTP_201_CREATED, headers=self.get_success_headers(serializer.data)
        )


class ScopedUpdateModelMixin(mixins.UpdateModelMixin):
    """DRF's update, with the object kept in its project before a view's ``perform_update``."""

    def update(self, request, *args, **kwargs):
        partial = kwargs.pop("partial", False)
        instance = self.get_object()
        serializer = self.get_serializer(instance, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        self.keep_project(serializer)
        self.perform_update(serializer)
        if getattr(instance, "_prefetched_objects_cache", None):
            instance._prefetched_objects_cache = {}  # as DRF: a prefetched relation may have changed
        return Response(serializer.data)


class ProjectScopedViewSet(
    ScopedCreateModelMixin,
    mixins.RetrieveModelMixin,
    ScopedUpdateModelMixin,
    mixins.DestroyModelMixin,
    mixins.ListModelMixin,
    ProjectScopedGenericViewSet,
):
    """Create, read, update, delete and list, scoped to the caller's projects: the create role
    and "an object never moves between projects" are checked here, for every endpoint."""
