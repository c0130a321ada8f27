from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import UserChangeForm, UserCreationForm
from django.db.models import Q

from sparkops.admin_scoping import ProjectScopedAdmin, SuperuserWrites, admin_roles, projects_with
from sparkops.roles import Role

from . import services
from .models import ApiKey, User


class UserCreateForm(UserCreationForm):
    class Meta:
        model = User
        fields = ("email", "name")


class UserEditForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


@admin.register(User)
class UserAdmin(SuperuserWrites, DjangoUserAdmin):
    add_form = UserCreateForm
    form = UserEditForm
    ordering = ["email"]
    list_display = ["email", "name", "is_active", "is_staff", "date_joined", "last_login"]
    list_filter = ["is_active", "is_staff", "is_superuser"]
    search_fields = ["email", "name"]
    readonly_fields = ["date_joined", "last_login"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("name",)}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "name", "password1", "password2")}),)

    # Staff who are not superusers read the people of their projects (and find anyone by exact
    # email, to add them as members); changing users, staff flags included, is superusers' only.
    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(
            Q(pk=request.user.pk) | Q(memberships__project_id__in=list(admin_roles(request)))
        ).distinct()

    def get_search_results(self, request, queryset, search_term):
        if request.user.is_superuser or not request.path.endswith("/autocomplete/"):
            return super().get_search_results(request, queryset, search_term)
        return User.objects.filter(email__iexact=search_term.strip()), False


class ApiKeyAdminForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ["project", "created_by", "name", "role", "expires_at"]

    def clean(self):
        cleaned = super().clean()
        if self.instance._state.adding and cleaned.get("project") and cleaned.get("created_by"):
            membership = cleaned["project"].memberships.filter(user=cleaned["created_by"]).first()
            if membership is None:
                raise forms.ValidationError("The key's user is not a member of this project.")
            if not Role.at_least(membership.role, cleaned.get("role")):
                self.add_error("role", f"A key's role cannot be higher than its user's ({membership.role}).")
        return cleaned


@admin.register(ApiKey)
class ApiKeyAdmin(ProjectScopedAdmin):
    """Admins issue and revoke their project's keys; members see and revoke the keys they made."""

    write_role = Role.ADMIN
    writable_when_archived = True
    # The list holds only keys the user may revoke: their own, and all of their admin projects'.
    action_roles = {"revoke": Role.VIEWER}
    form = ApiKeyAdminForm
    list_display = ["name", "prefix", "project", "created_by", "role", "expires_at", "revoked_at", "last_used_at"]
    list_filter = ["role", ("revoked_at", admin.EmptyFieldListFilter), "created_at"]
    list_select_related = ["project", "created_by"]
    search_fields = ["name", "prefix", "created_by__email", "project__slug"]
    autocomplete_fields = ["project", "created_by"]
    readonly_fields = ["prefix", "revoked_at", "last_used_at", "created_at"]
    actions = ["revoke"]

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(Q(project_id__in=projects_with(request, Role.ADMIN)) | Q(created_by=request.user))

    def has_change_permission(self, request, obj=None) -> bool:
        own = obj is not None and obj.created_by_id == request.user.pk
        return super().has_change_permission(request, obj) or (own and request.user.has_perm("accounts.change_apikey"))

    def has_revoke_permission(self, request) -> bool:
        return request.user.has_perm("accounts.change_apikey")  # on the rows listed: see get_queryset

    def get_readonly_fields(self, request, obj=None):
        # A key's owner, project and role are fixed once issued; revoke and issue another instead.
        if obj is not None:
            return [*self.readonly_fields, "project", "created_by", "role"]
        return self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        membership = obj.project.memberships.get(user=obj.created_by)
        key, raw = services.api_key_create(
            user=obj.created_by,
            creator_role=membership.role,
            project=obj.project,
            name=obj.name,
            role=obj.role,
            expires_at=obj.expires_at,
        )
        obj.pk, obj.prefix, obj.digest = key.pk, key.prefix, key.digest
        self.message_user(
            request, f"The new key is {raw} — copy it now; it will not be shown again.", level=messages.WARNING
        )

    @admin.action(description="Revoke selected keys", permissions=["revoke"])
    def revoke(self, request, queryset):
        for key in queryset:
            services.api_key_revoke(key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")
