from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.forms.models import BaseInlineFormSet

from policies.exceptions import PolicyRefused
from sparkops.roles import Role

from . import schedules, services
from .choices import Decision, StepStatus
from .models import Approval, Run, RunEvent, RunStep, Schedule, ScheduleFire


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class RunStepInline(ReadOnlyInline):
    model = RunStep
    fields = [
        "key",
        "kind",
        "status",
        "attempt",
        "lost_workers",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "latency_ms",
        "error",
        "finished_at",
    ]
    readonly_fields = fields
    ordering = ["position"]


class RunEventInline(ReadOnlyInline):
    model = RunEvent
    fields = ["sequence", "type", "step", "payload", "created_at"]
    readonly_fields = fields
    ordering = ["sequence"]


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "workflow",
        "status",
        "trigger",
        "cost_usd",
        "input_tokens",
        "output_tokens",
        "queued_at",
        "finished_at",
    ]
    list_filter = ["status", "trigger", "workflow"]
    list_select_related = ["workflow"]
    search_fields = ["=id", "title", "idempotency_key"]
    date_hierarchy = "queued_at"
    # No COUNT(*) over millions of runs for the paginator and the filter sidebar.
    show_full_result_count = False
    readonly_fields = [f.name for f in Run._meta.fields]
    inlines = [RunStepInline, RunEventInline]
    actions = ["cancel", "retry"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_operate_permission(self, request) -> bool:
        # Runs are read-only in forms, but cancel and retry change them: staff who may only
        # view runs must not be offered (nor able to post) these actions.
        return request.user.has_perm("runs.change_run")

    @admin.action(description="Cancel selected runs", permissions=["operate"])
    def cancel(self, request, queryset):
        done = 0
        for run in queryset:
            try:
                services.run_cancel(run=run)
                done += 1
            except services.TransitionRefused as exc:
                self.message_user(request, f"{run.pk}: {exc}", level=messages.WARNING)
        self.message_user(request, f"Cancelling {done} run(s).")

    @admin.action(description="Retry selected runs from their failed steps", permissions=["operate"])
    def retry(self, request, queryset):
        for run in queryset:
            try:
                retry, _ = services.run_retry(run=run, user=request.user)
                self.message_user(request, f"{run.pk}: retried as {retry.pk}.")
            except (services.TransitionRefused, ValidationError, PolicyRefused) as exc:
                self.message_user(request, f"{run.pk}: {exc}", level=messages.WARNING)


@admin.register(RunStep)
class RunStepAdmin(admin.ModelAdmin):
    list_display = ["run", "key", "kind", "status", "attempt", "cost_usd", "finished_at"]
    list_filter = ["status", "kind"]
    list_select_related = ["run"]
    search_fields = ["=run__id", "key"]
    show_full_result_count = False
    readonly_fields = [f.name for f in RunStep._meta.fields]
    actions = ["approve", "reject"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_decide_permission(self, request) -> bool:
        return request.user.has_perm("runs.change_runstep")  # as for runs: viewing is not deciding

    def _decide(self, request, queryset, decision: str) -> None:
        # Staff act as owners here: the admin is the operators' console.
        for step in queryset.filter(status=StepStatus.WAITING_APPROVAL).select_related("run__workflow_version"):
            try:
                services.step_decide(run=step.run, key=step.key, user=request.user, role=Role.OWNER, decision=decision)
            except (services.TransitionRefused, PermissionDenied, ValidationError) as exc:
                self.message_user(request, f"{step}: {exc}", level=messages.WARNING)
        self.message_user(request, f"Recorded {decision} where a decision was awaited.")

    @admin.action(description="Approve selected steps", permissions=["decide"])
    def approve(self, request, queryset):
        self._decide(request, queryset, Decision.APPROVED)

    @admin.action(description="Reject selected steps", permissions=["decide"])
    def reject(self, request, queryset):
        self._decide(request, queryset, Decision.REJECTED)


@admin.register(Approval)
class ApprovalAdmin(admin.ModelAdmin):
    list_display = ["step", "decision", "decided_by", "decided_at"]
    list_filter = ["decision"]
    list_select_related = ["step", "decided_by"]
    readonly_fields = ["step", "decision", "decided_by", "comment", "decided_at"]

    def has_add_permission(self, request) -> bool:
        return False


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
        for field, problems in schedules.schedule_errors(candidate).items():
            self.add_error(field if field in self.fields else None, problems)
        return cleaned


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
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
        schedules.schedule_save(schedule=obj)

    def delete_model(self, request, obj):
        schedules.schedule_delete(schedule=obj)

    def delete_queryset(self, request, queryset):
        for schedule in queryset:
            schedules.schedule_delete(schedule=schedule)

    @admin.action(description="Enable selected schedules", permissions=["change"])
    def enable(self, request, queryset):
        self.message_user(request, f"Enabled {schedules.schedules_set_enabled(queryset=queryset, enabled=True)}.")

    @admin.action(description="Disable selected schedules", permissions=["change"])
    def disable(self, request, queryset):
        self.message_user(request, f"Disabled {schedules.schedules_set_enabled(queryset=queryset, enabled=False)}.")

    @admin.action(description="Run selected schedules now", permissions=["change"])
    def run_now(self, request, queryset):
        for schedule in queryset.select_related("workflow"):
            fire = schedules.trigger(schedule=schedule)
            self.message_user(request, f"{schedule}: {fire.outcome} {fire.reason}".strip())
