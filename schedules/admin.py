from django import forms
from django.contrib import admin, messages
from django.forms.models import BaseInlineFormSet
from django.template.response import TemplateResponse

from projects import admin as projects_admin
from projects.models import Project
from runs.admin import ReadOnlyInline
from sparkops.admin_scoping import ProjectScopedAdmin
from sparkops.lib.errors import Refused
from sparkops.roles import Role

from . import forecast, services
from .freeze import project_freeze, project_unfreeze
from .models import Schedule, ScheduleFire


class RecentFiresFormSet(BaseInlineFormSet):
    """The newest fires only: max_num does not limit the rows an inline shows, and a schedule that
    fires every minute has thousands."""

    shown = 50

    def get_queryset(self):
        if not hasattr(self, "_recent"):
            self._recent = super().get_queryset()[: self.shown]
        return self._recent


class ScheduleFireInline(ReadOnlyInline):
    model = ScheduleFire
    formset = RecentFiresFormSet
    fields = ["nominal_time", "outcome", "reason", "manual", "run"]
    readonly_fields = fields
    ordering = ["-nominal_time"]


class ScheduleAdminForm(forms.ModelForm):
    class Meta:
        model = Schedule
        fields = [
            "project",
            "workflow",
            "version",
            "name",
            "cron",
            "timezone",
            "inputs",
            "enabled",
            "overlap_policy",
            "max_active",
            "catchup_policy",
            "catchup_window_seconds",
            "auto_pause_after",
            "jitter_seconds",
        ]

    #: Set by a "Preview forecast" submit: what the schedule as filled in would spend.
    forecast: dict | None = None

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        candidate = Schedule(**cleaned)
        for field, problems in services.schedule_errors(candidate).items():
            self.add_error(field if field in self.fields else None, problems)
        if "_forecast" in self.data and not self.errors:
            self.preview(candidate)
        return cleaned

    def preview(self, candidate: Schedule) -> None:
        """Show the forecast of the unsaved schedule; the form stays unsaved (a preview is not a save)."""
        period = self.data.get("_forecast_period", forecast.DEFAULT_PERIOD)
        period = period if period in forecast.PERIODS else forecast.DEFAULT_PERIOD
        self.forecast = forecast.schedule_forecast(schedule=candidate, period=period)
        raise forms.ValidationError("Forecast shown below; nothing was saved. Save to keep these settings.")


@admin.register(Schedule)
class ScheduleAdmin(ProjectScopedAdmin):
    write_role = Role.ADMIN
    form = ScheduleAdminForm
    list_display = ["name", "project", "workflow", "cron", "timezone", "enabled", "next_fire_at", "last_fire_at"]
    list_filter = ["enabled", "overlap_policy", "catchup_policy"]
    list_select_related = ["project", "workflow"]
    search_fields = ["name", "cron", "project__slug", "workflow__slug"]
    autocomplete_fields = ["project"]
    readonly_fields = ["paused_reason", "paused_by_freeze", "last_fire_at", "next_fire_at", "created_at", "updated_at"]
    inlines = [ScheduleFireInline]
    actions = ["enable", "disable", "run_now"]

    def add_view(self, request, form_url="", extra_context=None):
        return super().add_view(request, form_url, {"stored_forecast": None} | (extra_context or {}))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The forecast of the schedule as saved, until a preview shows the one of the form."""
        schedule = self.get_object(request, object_id)
        extra = {"stored_forecast": forecast.schedule_forecast(schedule=schedule) if schedule else None}
        return super().change_view(request, object_id, form_url, extra | (extra_context or {}))

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        services.schedule_save(schedule=obj)

    def delete_model(self, request, obj):
        services.schedule_delete(schedule=obj)

    def delete_queryset(self, request, queryset):
        for schedule in queryset:
            services.schedule_delete(schedule=schedule)

    @admin.action(description="Enable selected schedules", permissions=["change"])
    def enable(self, request, queryset):
        self.message_user(request, f"Enabled {services.schedules_set_enabled(queryset=queryset, enabled=True)}.")
        # Enabling warns, never refuses: say which budgets these schedules would run out.
        for schedule in queryset.select_related("workflow", "version"):
            for warning in forecast.schedule_forecast(schedule=schedule)["warnings"]:
                self.message_user(request, f"{schedule}: {warning}", level=messages.WARNING)

    @admin.action(description="Disable selected schedules", permissions=["change"])
    def disable(self, request, queryset):
        self.message_user(request, f"Disabled {services.schedules_set_enabled(queryset=queryset, enabled=False)}.")

    @admin.action(description="Run selected schedules now", permissions=["change"])
    def run_now(self, request, queryset):
        for schedule in queryset.select_related("workflow"):
            fire = services.trigger(schedule=schedule)
            self.message_user(request, f"{schedule}: {fire.outcome} {fire.reason}".strip())


# ------------------------------------------------------------------------------
# The kill switch on the project admin (freezing drives runs and schedules, so it lives here)
# ------------------------------------------------------------------------------
class FreezeForm(forms.Form):
    reason = forms.CharField(max_length=500, help_text='Shown in every refusal, e.g. "runaway spend".')
    revoke_api_keys = forms.BooleanField(required=False, help_text="Also revoke every API key of the project.")


admin.site.unregister(Project)


@admin.register(Project)
class ProjectAdmin(projects_admin.ProjectAdmin):
    """The project admin, plus freeze (after a confirmation page) and unfreeze."""

    list_display = [*projects_admin.ProjectAdmin.list_display, "frozen_at"]
    readonly_fields = [*projects_admin.ProjectAdmin.readonly_fields, "frozen_at", "frozen_reason"]
    actions = ["freeze", "unfreeze"]

    @admin.action(description="Freeze selected projects (pause schedules, cancel runs)…", permissions=["change"])
    def freeze(self, request, queryset):
        form = FreezeForm(request.POST if request.POST.get("confirm") else None)
        if not form.is_valid():
            context = {**self.admin_site.each_context(request), "form": form, "projects": list(queryset)}
            return TemplateResponse(request, "admin/schedules/freeze_confirmation.html", context)
        for project in queryset:
            try:
                outcome = project_freeze(project=project, **form.cleaned_data)
            except Refused as refusal:
                self.message_user(request, f"{project}: {refusal.message}", messages.WARNING)
                continue
            self.message_user(
                request,
                f"{project}: frozen; {len(outcome.schedules)} schedule(s) paused, "
                f"{len(outcome.runs_cancelled)} run(s) cancelled, {len(outcome.api_keys_revoked)} key(s) revoked.",
            )
        return None

    @admin.action(description="Unfreeze selected projects (resume what the freeze paused)", permissions=["change"])
    def unfreeze(self, request, queryset):
        for project in queryset:
            try:
                outcome = project_unfreeze(project=project)
            except Refused as refusal:
                self.message_user(request, f"{project}: {refusal.message}", messages.WARNING)
                continue
            self.message_user(request, f"{project}: unfrozen; {len(outcome.schedules)} schedule(s) resumed.")
