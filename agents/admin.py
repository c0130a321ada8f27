from django import forms
from django.contrib import admin

from sparkops.admin_scoping import ProjectScopedAdmin, SuperuserWrites
from sparkops.roles import Role

from . import providers, services
from .models import Agent, ModelPrice, ProviderCredential, Tool


class CredentialAdminForm(forms.ModelForm):
    secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Write-only. Leave empty to keep the stored secret.",
    )
    provider = forms.ChoiceField(choices=providers.choices)

    class Meta:
        model = ProviderCredential
        fields = ["project", "name", "provider", "base_url", "secret"]


@admin.register(ProviderCredential)
class CredentialAdmin(ProjectScopedAdmin):
    write_role = Role.ADMIN
    form = CredentialAdminForm
    list_display = ["name", "project", "provider", "base_url", "has_secret", "updated_at"]
    list_filter = ["provider"]
    list_select_related = ["project"]
    search_fields = ["name", "project__slug", "base_url"]
    autocomplete_fields = ["project"]

    @admin.display(boolean=True)
    def has_secret(self, obj: ProviderCredential) -> bool:
        return obj.has_secret

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        services.credential_save(credential=obj, secret=form.cleaned_data.get("secret") or None)


def _as_form_errors(form: forms.ModelForm, errors: dict[str, list[str]]) -> None:
    for field, messages in errors.items():
        form.add_error(field if field in form.fields else None, messages)


class AgentAdminForm(forms.ModelForm):
    provider = forms.ChoiceField(choices=providers.choices)

    class Meta:
        model = Agent
        fields = [
            "project",
            "name",
            "slug",
            "description",
            "role",
            "provider",
            "model",
            "system_prompt",
            "parameters",
            "tools",
            "credential",
            "max_tool_iterations",
            "status",
            "avatar_url",
        ]

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        agent = Agent(**{k: v for k, v in cleaned.items() if k != "tools"})
        agent.project_id = cleaned["project"].pk
        _as_form_errors(self, services.agent_errors(agent, list(cleaned.get("tools") or [])))
        return cleaned


@admin.register(Agent)
class AgentAdmin(ProjectScopedAdmin):
    form = AgentAdminForm
    list_display = ["name", "project", "provider", "model", "status", "health_status", "health_checked_at"]
    list_filter = ["status", "provider", "health_status"]
    list_select_related = ["project"]
    search_fields = ["name", "slug", "model", "role", "project__slug"]
    autocomplete_fields = ["project", "credential", "tools"]
    readonly_fields = [
        "health_status",
        "health_latency_ms",
        "health_error",
        "health_checked_at",
        "created_at",
        "updated_at",
    ]
    actions = ["health_check"]

    @admin.action(description="Run a health check", permissions=["change"])
    def health_check(self, request, queryset):
        for agent in queryset.select_related("credential"):
            services.agent_health_check(agent=agent)
        self.message_user(request, f"Checked {queryset.count()} agent(s).")


class ToolAdminForm(forms.ModelForm):
    class Meta:
        model = Tool
        fields = [
            "project",
            "name",
            "slug",
            "description",
            "kind",
            "input_schema",
            "config",
            "credential",
            "risk_class",
            "requires_approval",
            "enabled",
        ]

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        tool = Tool(**cleaned)
        _as_form_errors(self, services.tool_errors(tool))
        return cleaned


@admin.register(Tool)
class ToolAdmin(ProjectScopedAdmin):
    form = ToolAdminForm
    list_display = ["name", "slug", "project", "kind", "risk_class", "requires_approval", "enabled"]
    list_filter = ["kind", "risk_class", "requires_approval", "enabled"]
    list_select_related = ["project"]
    search_fields = ["name", "slug", "description", "project__slug"]
    autocomplete_fields = ["project", "credential"]

    def save_model(self, request, obj, form, change):
        services.tool_save(tool=obj)  # the form's clean() already showed any problem


@admin.register(ModelPrice)
class ModelPriceAdmin(SuperuserWrites, admin.ModelAdmin):
    """One price table for every project: staff who are not superusers read it."""

    list_display = ["provider", "model", "input_usd_per_mtok", "output_usd_per_mtok", "effective_from"]
    list_filter = ["provider"]
    search_fields = ["provider", "model"]
    date_hierarchy = "effective_from"
