from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.forms.models import BaseInlineFormSet
from django.urls import reverse
from django.utils.html import format_html

from sparkops.admin_scoping import ProjectScopedAdmin, role_of

from . import services
from .choices import Role
from .models import Membership, Project


def owner_rule_problem(actor_role: str | None, before: str | None, after: str | None) -> str | None:
    """Only owners grant, change or revoke the owner role (README "Projects and members")."""
    if actor_role != Role.OWNER and Role.OWNER in (before, after):
        return services.OWNER_ONLY
    return None


class MembershipFormSet(BaseInlineFormSet):
    actor_role: str | None = Role.OWNER  # set per request by MembershipInline

    def clean(self) -> None:
        super().clean()
        for form in self.forms:
            if not form.cleaned_data or not (form.has_changed() or form.cleaned_data.get("DELETE")):
                continue
            before = None if form.instance._state.adding else form.initial.get("role")
            if problem := owner_rule_problem(self.actor_role, before, form.cleaned_data.get("role")):
                raise ValidationError(problem)
        if self.instance._state.adding:
            return
        owners = [
            form
            for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE") and form.cleaned_data.get("role") == Role.OWNER
        ]
        if not owners:
            raise ValidationError(services.LAST_OWNER)


class MembershipInline(admin.TabularInline):
    model = Membership
    formset = MembershipFormSet
    extra = 1
    autocomplete_fields = ["user"]

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        formset.actor_role = role_of(request, obj.pk) if obj else Role.OWNER  # a new project's creator owns it
        return formset

    def _manages(self, request, obj) -> bool:
        return obj is None or Role.at_least(role_of(request, obj.pk), Role.ADMIN)

    def has_add_permission(self, request, obj=None) -> bool:
        return super().has_add_permission(request, obj) and self._manages(request, obj)

    def has_change_permission(self, request, obj=None) -> bool:
        return super().has_change_permission(request, obj) and self._manages(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return super().has_delete_permission(request, obj) and self._manages(request, obj)


@admin.register(Project)
class ProjectAdmin(ProjectScopedAdmin):
    project_path = ""
    write_role = Role.ADMIN
    writable_when_archived = True  # to unarchive it
    delete_role = Role.OWNER
    list_display = ["name", "slug", "archived", "created_by", "created_at", "dashboard"]
    list_filter = ["archived", "created_at"]
    list_select_related = ["created_by"]
    search_fields = ["name", "slug", "description"]
    prepopulated_fields = {"slug": ("name",)}
    autocomplete_fields = ["created_by"]
    readonly_fields = ["created_at", "updated_at"]
    inlines = [MembershipInline]

    def has_add_permission(self, request) -> bool:
        return admin.ModelAdmin.has_add_permission(self, request)  # anyone may create a project; they own it

    @admin.display(description="dashboard")
    def dashboard(self, project: Project) -> str:
        return format_html('<a href="{}?project={}">Dashboard</a>', reverse("admin:index"), project.pk)

    def save_related(self, request, form, formsets, change) -> None:
        super().save_related(request, form, formsets, change)
        project = form.instance
        if not change and not project.memberships.filter(role=Role.OWNER).exists():
            Membership.objects.update_or_create(project=project, user=request.user, defaults={"role": Role.OWNER})


class MembershipAdminForm(forms.ModelForm):
    request = None  # set per request by MembershipAdmin

    class Meta:
        model = Membership
        fields = ["user", "project", "role"]

    def clean(self):
        cleaned = super().clean()
        project = self.instance.project if not self.instance._state.adding else cleaned.get("project")
        before = None if self.instance._state.adding else self.initial.get("role")
        actor_role = role_of(self.request, project.pk) if project else None
        if problem := owner_rule_problem(actor_role, before, cleaned.get("role")):
            self.add_error("role", problem)
        return cleaned


@admin.register(Membership)
class MembershipAdmin(ProjectScopedAdmin):
    form = MembershipAdminForm
    write_role = Role.ADMIN
    writable_when_archived = True  # who may read the history
    list_display = ["user", "project", "role", "created_at"]
    list_filter = ["role"]
    list_select_related = ["user", "project"]
    search_fields = ["user__email", "user__name", "project__name", "project__slug"]
    autocomplete_fields = ["user", "project"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        form.request = request
        return form

    def has_delete_permission(self, request, obj=None) -> bool:
        allowed = super().has_delete_permission(request, obj)
        if not allowed or obj is None:
            return allowed
        if owner_rule_problem(role_of(request, obj.project_id), obj.role, None):
            return False
        # The last owner stays: the delete page would otherwise end in the service's refusal.
        return obj.role != Role.OWNER or obj.project.memberships.filter(role=Role.OWNER).count() > 1

    def delete_model(self, request, obj) -> None:
        services.membership_remove(membership=obj, actor=request.user, actor_role=role_of(request, obj.project_id))

    def delete_queryset(self, request, queryset) -> None:
        for membership in queryset.select_related("user", "project"):
            try:
                self.delete_model(request, membership)
            except ValidationError as exc:
                self.message_user(request, f"{membership}: {' '.join(exc.messages)}", level=messages.WARNING)
