"""Project scoping for the Django admin, shared by every ModelAdmin of ours.

Superusers see and do everything. Other staff need two things, as in the API plus Django's
model permissions: the model permission (which kinds of object they handle at all), and a role
in the object's project (where, and how much). Their lists show only the rows of projects where
they hold at least ``read_role``; adding, changing and deleting need ``write_role`` in the row's
project (``delete_role`` for deletes); each admin action needs its role in ``action_roles``, and
acts only on the selected rows of projects where the user holds it; the choices of every foreign
key to a project-scoped object are the rows the user may write to. The roles are those of
README's "who may write what": the same rules as the API's scoped viewsets.
"""

import uuid
from collections.abc import Callable

from django.contrib import admin, messages
from django.db.models import Q, QuerySet

from projects.models import Membership, Project
from sparkops.roles import Role

_CACHE_ATTR = "_sparkops_admin_roles"
_ARCHIVED_ATTR = "_sparkops_admin_archived"


def admin_roles(request) -> dict[uuid.UUID, str]:
    """Project id -> the staff user's role, read once per request."""
    roles = getattr(request, _CACHE_ATTR, None)
    if roles is None:
        roles = dict(Membership.objects.filter(user_id=request.user.pk).values_list("project_id", "role"))
        setattr(request, _CACHE_ATTR, roles)
    return roles


def projects_with(request, role: str) -> list[uuid.UUID]:
    """The projects where the user holds at least ``role``."""
    return [pid for pid, have in admin_roles(request).items() if Role.at_least(have, role)]


def archived_projects(request) -> frozenset:
    """The archived projects, read once per request: they are read-only (README "Projects and members")."""
    archived = getattr(request, _ARCHIVED_ATTR, None)
    if archived is None:
        archived = frozenset(Project.objects.filter(archived=True).values_list("pk", flat=True))
        setattr(request, _ARCHIVED_ATTR, archived)
    return archived


def role_of(request, project_id) -> str | None:
    """The user's role in a project; superusers act as owners everywhere."""
    if request.user.is_superuser:
        return Role.OWNER
    return admin_roles(request).get(project_id)


class SuperuserWrites:
    """For rows of no project (users, the price table): staff read them, superusers write them."""

    def has_add_permission(self, request, *args) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser


class ProjectScopedAdmin(admin.ModelAdmin):
    """A ModelAdmin whose rows belong to projects (see the module's docstring)."""

    #: ORM path from the model to its Project; "" when the model is Project itself.
    project_path = "project"
    read_role = Role.VIEWER
    write_role = Role.DEVELOPER
    #: The role deleting needs; the write role unless set.
    delete_role: str | None = None
    #: Action name -> the role it needs in the row's project; the write role unless named.
    action_roles: dict[str, str] = {}
    #: Rows outside any project (global policies) are seen by all staff, written by superusers.
    global_rows = False
    #: An archived project is read-only, for superusers too, except what README names: its
    #: members and keys, and unarchiving it.
    writable_when_archived = False

    # ---------------------------------------------------------------- rows
    @property
    def project_id_path(self) -> str:
        return f"{self.project_path}_id" if self.project_path else "pk"

    def in_projects(self, project_ids) -> Q:
        scoped = Q(**{f"{self.project_id_path}__in": list(project_ids)})
        return scoped | Q(**{f"{self.project_id_path}__isnull": True}) if self.global_rows else scoped

    def get_queryset(self, request) -> QuerySet:
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(self.in_projects(projects_with(request, self.read_role)))

    def project_id_of(self, obj):
        if not self.project_path:
            return obj.pk
        *hops, last = self.project_path.split("__")
        for hop in hops:
            obj = getattr(obj, hop)
        return getattr(obj, f"{last}_id")

    def may(self, request, role: str, obj=None) -> bool:
        """Whether the user holds ``role`` in the object's project, or in some project when no
        object is given (a list offers the button; the row decides)."""
        project_id = None if obj is None else self.project_id_of(obj)
        if role != self.read_role and not self.writable_when_archived and project_id in archived_projects(request):
            return False
        if request.user.is_superuser:
            return True
        if obj is None:
            return bool(projects_with(request, role))
        if project_id is None:
            return self.global_rows and role == self.read_role
        return Role.at_least(admin_roles(request).get(project_id), role)

    # ---------------------------------------------------------------- permissions
    def has_view_permission(self, request, obj=None) -> bool:
        return super().has_view_permission(request, obj) and self.may(request, self.read_role, obj)

    def has_add_permission(self, request) -> bool:
        return super().has_add_permission(request) and self.may(request, self.write_role)

    def has_change_permission(self, request, obj=None) -> bool:
        return super().has_change_permission(request, obj) and self.may(request, self.write_role, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        role = self.delete_role or self.write_role
        return super().has_delete_permission(request, obj) and self.may(request, role, obj)

    # ---------------------------------------------------------------- actions
    def action_role(self, name: str) -> str:
        if name == "delete_selected":
            return self.delete_role or self.write_role
        return self.action_roles.get(name, self.write_role)

    def get_actions(self, request) -> dict:
        actions = super().get_actions(request)
        if request.user.is_superuser:
            return actions
        return {
            name: (_scoped(self, func, self.action_role(name)), name, description)
            for name, (func, _, description) in actions.items()
            if self.may(request, self.action_role(name))
        }

    def actionable(self, request, queryset: QuerySet, role: str) -> QuerySet:
        """The selected rows of projects where the user holds ``role``."""
        return queryset.filter(Q(**{f"{self.project_id_path}__in": projects_with(request, role)}))

    # ---------------------------------------------------------------- choices
    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if "queryset" not in kwargs and (choices := self.writable_choices(db_field, request)) is not None:
            kwargs["queryset"] = choices
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if "queryset" not in kwargs and (choices := self.writable_choices(db_field, request)) is not None:
            kwargs["queryset"] = choices
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def writable_choices(self, db_field, request) -> QuerySet | None:
        """The rows of a project-scoped related model that the user may point at: those of the
        projects where they hold this admin's write role. None leaves Django's default."""
        return scoped_choices(self.admin_site, db_field.remote_field.model, request, self.write_role)


def scoped_choices(site, model, request, role: str) -> QuerySet | None:
    if model is Project:  # a new row goes into a project that takes writes
        projects = Project.objects.filter(archived=False)
        return projects if request.user.is_superuser else projects.filter(pk__in=projects_with(request, role))
    if request.user.is_superuser:
        return None
    projects = projects_with(request, role)
    related_admin = site._registry.get(model)
    if not isinstance(related_admin, ProjectScopedAdmin):
        return None
    return model._default_manager.filter(related_admin.in_projects(projects))


def _scoped(model_admin: ProjectScopedAdmin, func: Callable, role: str) -> Callable:
    """An action that runs only on the selected rows the user's roles allow, and says how many
    it left out."""

    def action(modeladmin, request, queryset):
        allowed = model_admin.actionable(request, queryset, role)
        skipped = queryset.count() - allowed.count()
        if skipped:
            message = f"Left out {skipped} selected row(s): this needs the {role} role in their project."
            model_admin.message_user(request, message, level=messages.WARNING)
        return func(modeladmin, request, allowed)

    action.__name__ = getattr(func, "__name__", "action")
    return action


class ReadOnlyAdmin(ProjectScopedAdmin):
    """Rows the engine writes: operators read them, nobody edits them here."""

    # No COUNT(*) over the whole table for the paginator and the filter sidebar.
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
