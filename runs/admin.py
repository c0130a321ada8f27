from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError

from policies.exceptions import PolicyRefused
from sparkops.roles import Role

from . import services
from .admin_paging import QueuedWithin, UncountedAdmin
from .choices import Decision, StepStatus
from .models import Approval, Run, RunEvent, RunStep


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
class RunAdmin(UncountedAdmin, admin.ModelAdmin):
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
    list_filter = ["status", "trigger", "workflow", QueuedWithin]
    list_select_related = ["workflow"]
    search_fields = ["=id", "title", "idempotency_key"]
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
