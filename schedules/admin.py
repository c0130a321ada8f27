from django import forms
from django.contrib import admin
from django.forms.models import BaseInlineFormSet

from runs.admin import ReadOnlyInline
from sparkops.admin_scoping import ProjectScopedAdmin
from sparkops.roles import Role

from . import services
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

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        candidate = Schedule(**cleaned)
        for field, problems in services.schedule_errors(candidate).items():
            self.add_error(field if field in self.fields else None, problems)
        return cleaned


@admin.register(Schedule)
class ScheduleAdmin(ProjectScopedAdmin):
    write_role = Role.ADMIN
    form = ScheduleAdminForm
    list_display = ["name", "project", "workflow", "cron", "timezone", "enabled", "next_fire_at", "last_fire_at"]
    list_filter = ["enabled", "overlap_policy", "catchup_policy"]
    list_select_related = ["project", "workflow"]
    search_fields = ["name", "cron", "project__slug", "workflow__slug"]
    autocomplete_fields = ["project"]
    readonly_fields = ["paused_reason", "last_fire_at", "next_fire_at", "created_at", "updated_at"]
    inlines = [ScheduleFireInline]
    actions = ["enable", "disable", "run_now"]

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

    @admin.action(description="Disable selected schedules", permissions=["change"])
    def disable(self, request, queryset):
        self.message_user(request, f"Disabled {services.schedules_set_enabled(queryset=queryset, enabled=False)}.")

    @admin.action(description="Run selected schedules now", permissions=["change"])
    def run_now(self, request, queryset):
        for schedule in queryset.select_related("workflow"):
            fire = services.trigger(schedule=schedule)
            self.message_user(request, f"{schedule}: {fire.outcome} {fire.reason}".strip())
