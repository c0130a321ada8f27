import json

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.forms.fields import InvalidJSONInput
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from agents import providers
from projects.models import Project
from sparkops.admin_scoping import ProjectScopedAdmin, ReadOnlyAdmin, projects_with
from sparkops.roles import Role

from . import kinds, selectors, services
from .choices import PolicyKind
from .models import Policy, PolicyDecision, SpendEntry


class PrettyJSONField(forms.JSONField):
    """JSON shown indented, so a config can be read and edited in a textarea."""

    def prepare_value(self, value):
        if isinstance(value, InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False)


class PolicyAdminForm(forms.ModelForm):
    """Policy.clean() checks the config against its kind; a ModelForm runs it (full_clean) and
    puts its per-key messages on the config and action fields."""

    config = PrettyJSONField(
        widget=forms.Textarea(attrs={"rows": 6, "cols": 80}),
        help_text="A JSON object; what it takes depends on the kind (examples below).",
    )

    class Meta:
        model = Policy
        fields = ["project", "name", "kind", "action", "enabled", "priority", "description", "config"]
        help_texts = {
            "project": "Leave empty for a global policy: it applies to every project, each on its own "
            "(a global $50/day budget gives each project $50/day).",
        }

    def clean(self):
        cleaned = super().clean()
        if "config" in self.errors:
            # The model's check would judge the value the form could not read (on add, the default
            # {}) and pile "amount_usd is required" onto "Enter a valid JSON". With None it says
            # once that an object is wanted, with the kind's example.
            self.instance.config = None
        return cleaned


class ScopeFilter(admin.SimpleListFilter):
    title = "scope"
    parameter_name = "scope"

    def lookups(self, request, model_admin):
        return [("global", "Global (every project)"), ("project", "One project")]

    def queryset(self, request, queryset):
        if self.value() == "global":
            return queryset.filter(project__isnull=True)
        if self.value() == "project":
            return queryset.filter(project__isnull=False)
        return queryset


@admin.register(Policy)
class PolicyAdmin(ProjectScopedAdmin):
    write_role = Role.ADMIN
    global_rows = True  # global policies: every staff member reads them, superusers write them
    form = PolicyAdminForm
    change_list_template = "admin/policies/policy/change_list.html"
    list_display = ["name", "project_or_global", "kind", "action", "enabled", "priority"]
    list_filter = ["kind", "action", "enabled", ScopeFilter]
    list_select_related = ["project"]
    search_fields = ["name", "description", "project__name", "project__slug"]
    autocomplete_fields = ["project"]
    readonly_fields = ["config_examples", "created_by", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["project", "name", "kind", "action", "enabled", "priority", "description"]}),
        ("Configuration", {"fields": ["config", "config_examples"]}),
        ("Record", {"fields": ["created_by", "created_at", "updated_at"]}),
    ]

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if not request.user.is_superuser and "project" in form.base_fields:  # a global policy: superusers' only
            form.base_fields["project"].required = True
        return form

    @admin.display(description="project", ordering="project__name")
    def project_or_global(self, policy: Policy) -> str:
        return str(policy.project) if policy.project_id else "global"

    @admin.display(description="examples")
    def config_examples(self, policy: Policy) -> str:
        rows = format_html_join(
            "",
            "<tr><th>{}</th><td><code>{}</code></td></tr>",
            ((PolicyKind(kind.name).label, json.dumps(kind.example)) for kind in kinds.all_kinds()),
        )
        return format_html("<table>{}</table>", rows)

    def save_model(self, request, obj: Policy, form, change: bool) -> None:
        if not change:
            obj.created_by = request.user
        services.policy_save(policy=obj)

    # --------------------------------------------------------------------------
    # Budget overview
    # --------------------------------------------------------------------------
    def get_urls(self):
        name = f"{self.opts.app_label}_{self.opts.model_name}_budgets"
        # Before the default URLs: their "<object_id>/" would take "budgets/" for a policy's id.
        return [path("budgets/", self.admin_site.admin_view(self.budget_overview), name=name), *super().get_urls()]

    def budget_overview(self, request):
        """Every budget of every active project: spent, reserved, remaining, window, projection."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        projects = Project.objects.filter(archived=False).order_by("name")
        if not request.user.is_superuser:
            projects = projects.filter(pk__in=projects_with(request, self.read_role))
        projects = {p.pk: p for p in projects}
        by_project = {pk: [] for pk in projects}
        for status in selectors.budgets_of(list(projects)):
            by_project[status.project_id].append(_budget_row(status))
        context = {
            **self.admin_site.each_context(request),
            "title": "Budget overview",
            "opts": self.opts,
            "now": timezone.now(),
            "groups": [(projects[pk], rows) for pk, rows in by_project.items() if rows],
        }
        return TemplateResponse(request, "admin/policies/budget_overview.html", context)


def _budget_row(status: selectors.BudgetStatus) -> dict:
    config = status.policy.config
    window = f"rolling {config['days']} days" if config["window"] == "rolling" else config["window"]
    return {
        "status": status,
        "window": f"{window} ({config.get('timezone') or 'UTC'})",
        "used": status.spent + status.reserved,
        "over_pace": status.projected > status.amount,
    }


@admin.register(PolicyDecision)
class PolicyDecisionAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "project", "policy", "run", "step", "stage", "outcome", "reason"]
    list_filter = ["outcome", "stage"]
    list_select_related = ["project", "policy", "run", "step"]
    search_fields = ["=run__id", "policy__name"]


class ProviderFilter(admin.SimpleListFilter):
    """The registry's providers: a DISTINCT over the ledger's provider column would read the whole
    table on every page view."""

    title = "provider"
    parameter_name = "provider"

    def lookups(self, request, model_admin):
        return providers.choices()

    def queryset(self, request, queryset):
        return queryset.filter(provider=self.value()) if self.value() else queryset


@admin.register(SpendEntry)
class SpendEntryAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "project",
        "run",
        "agent",
        "provider",
        "model",
        "status",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "reserved_usd",
        "price",
    ]
    list_filter = ["status", ProviderFilter]
    list_select_related = ["project", "run", "agent", "price"]
    search_fields = ["=run__id", "model"]
