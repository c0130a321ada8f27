import json
from datetime import timedelta

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from projects.models import Project
from sparkops.admin_scoping import ProjectScopedAdmin, projects_with, role_of
from sparkops.console import badge, duration, millis, usd, when
from sparkops.lib.errors import Refused
from sparkops.roles import Role
from workflows.models import Workflow

from . import services
from .admin_paging import QueuedWithin, UncountedAdmin
from .choices import Decision, RunStatus, StepStatus
from .models import Approval, Run, RunEvent, RunStep

EVENTS_PER_PAGE = 50
EXCERPT = 240
#: Runs longer than this are left out of "finished in the last 24 h" so the count can use the
#: (project, status, queued_at) index instead of reading every failed run ever.
LONGEST_COUNTED_RUN = timedelta(days=7)
CANCEL_SAYS = (
    "No new step will start. Steps running now stop at their next check and the run ends "
    "cancelled. What was spent so far stays recorded."
)
RETRY_SAYS = (
    "A new run of the same pinned workflow version starts with the same inputs. Steps that "
    "succeeded are not run again: their outputs are reused. Policies and budgets admit it like "
    "any new run."
)


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


# ------------------------------------------------------------------------------
# Filters that list the user's projects and workflows (no DISTINCT over millions of runs)
# ------------------------------------------------------------------------------
def visible_projects(request):
    projects = Project.objects.order_by("name")
    return projects if request.user.is_superuser else projects.filter(pk__in=projects_with(request, Role.VIEWER))


class ProjectFilter(admin.SimpleListFilter):
    title = "project"
    parameter_name = "project"
    path = "project_id"

    def lookups(self, request, model_admin):
        return [(str(p.pk), p.name) for p in visible_projects(request)]

    def queryset(self, request, queryset):
        return queryset.filter(**{self.path: self.value()}) if self.value() else queryset


class WorkflowFilter(admin.SimpleListFilter):
    """Workflows named with their project, so two projects' "Research brief" read apart."""

    title = "workflow"
    parameter_name = "workflow"
    path = "workflow_id"

    def lookups(self, request, model_admin):
        workflows = Workflow.objects.filter(project__in=visible_projects(request)).select_related("project")
        if project := request.GET.get("project"):
            workflows = workflows.filter(project_id=project)
        return [(str(w.pk), f"{w.project.name} · {w.name}") for w in workflows.order_by("project__name", "name")]

    def queryset(self, request, queryset):
        return queryset.filter(**{self.path: self.value()}) if self.value() else queryset


class FinishedFilter(admin.SimpleListFilter):
    title = "finished"
    parameter_name = "finished"

    def lookups(self, request, model_admin):
        return [("24h", "In the last 24 hours"), ("7d", "In the last 7 days")]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        return queryset.filter(finished_since(timezone.now() - timedelta(hours=24 if self.value() == "24h" else 168)))


def finished_since(since) -> Q:
    return Q(finished_at__gte=since, queued_at__gte=since - LONGEST_COUNTED_RUN)


class StepProjectFilter(ProjectFilter):
    path = "run__project_id"


class StepWorkflowFilter(WorkflowFilter):
    path = "run__workflow_id"


# ------------------------------------------------------------------------------
# Runs
# ------------------------------------------------------------------------------
@admin.register(Run)
class RunAdmin(UncountedAdmin, ProjectScopedAdmin):
    list_display = ["label", "status_badge", "project", "run_duration", "cost", "queued", "finished"]
    list_display_links = ["label"]
    list_filter = ["status", ProjectFilter, WorkflowFilter, "trigger", QueuedWithin, FinishedFilter]
    list_select_related = ["workflow", "project"]
    search_fields = ["=id", "title", "idempotency_key"]
    # No COUNT(*) over millions of runs for the paginator and the filter sidebar.
    show_full_result_count = False
    readonly_fields = [f.name for f in Run._meta.fields]
    fieldsets = [
        ("Inputs and outputs", {"fields": ["inputs", "outputs", "error"], "classes": ["collapse"]}),
        (
            "Record",
            {
                "fields": [
                    f.name
                    for f in Run._meta.fields
                    if f.name not in ("inputs", "outputs", "error", "request_fingerprint")
                ],
                "classes": ["collapse"],
            },
        ),
    ]
    change_form_template = "admin/runs/run/change_form.html"
    actions = ["cancel", "retry"]
    action_roles = {"cancel": Role.DEVELOPER, "retry": Role.DEVELOPER, "delete_selected": Role.ADMIN}
    delete_role = Role.ADMIN

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_operate_permission(self, request) -> bool:
        # Runs are read-only in forms, but cancel and retry change them: staff who may only
        # view runs must not be offered (nor able to post) these actions.
        return request.user.has_perm("runs.change_run")

    # ---------------------------------------------------------------- columns
    @admin.display(description="run", ordering="queued_at")
    def label(self, run: Run) -> str:
        return str(run)

    @admin.display(description="status", ordering="status")
    def status_badge(self, run: Run) -> str:
        return badge(run.status, run.get_status_display())

    @admin.display(description="duration")
    def run_duration(self, run: Run) -> str:
        return duration(run.started_at, run.finished_at)

    @admin.display(description="cost", ordering="cost_usd")
    def cost(self, run: Run) -> str:
        return usd(run.cost_usd)

    @admin.display(description="queued", ordering="queued_at")
    def queued(self, run: Run) -> str:
        return when(run.queued_at)

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, run: Run) -> str:
        return when(run.finished_at)

    # ---------------------------------------------------------------- actions
    @admin.action(description="Cancel selected runs", permissions=["operate"])
    def cancel(self, request, queryset):
        done = 0
        for run in queryset.select_related("workflow"):
            try:
                services.run_cancel(run=run)
                done += 1
            except services.TransitionRefused as exc:
                self.message_user(request, f"{run}: {exc}", level=messages.WARNING)
        self.message_user(request, f"Cancelling {done} run(s).")

    @admin.action(description="Retry selected runs from their failed steps", permissions=["operate"])
    def retry(self, request, queryset):
        for run in queryset.select_related("workflow"):
            try:
                retry, _ = services.run_retry(run=run, user=request.user)
                self.message_user(request, f"{run}: retried as {retry.short_id}.")
            except (services.TransitionRefused, ValidationError, Refused) as exc:
                self.message_user(request, f"{run}: {exc}", level=messages.WARNING)

    # ---------------------------------------------------------------- the run page
    def get_urls(self):
        view = self.admin_site.admin_view
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("<uuid:run_id>/cancel/", view(self.cancel_view), name=f"{name}_cancel"),
            path("<uuid:run_id>/retry/", view(self.retry_view), name=f"{name}_retry"),
            path("<uuid:run_id>/steps/<slug:key>/decide/", view(self.decide_view), name=f"{name}_decide"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, object_id)
        if run is not None:
            extra_context = {**(extra_context or {}), **self.run_page(request, run)}
        return super().change_view(request, object_id, form_url, extra_context)

    def run_page(self, request, run: Run) -> dict:
        steps = list(run.steps.select_related("agent", "tool").order_by("position"))
        events = Paginator(
            RunEvent.objects.filter(run=run).select_related("step").order_by("sequence"), EVENTS_PER_PAGE
        )
        role = role_of(request, run.project_id)
        may_operate = self.has_operate_permission(request) and Role.at_least(role, Role.DEVELOPER)
        return {
            "run": run,
            "run_status": badge(run.status, run.get_status_display()),
            "run_duration": duration(run.started_at, run.finished_at),
            "run_cost": usd(run.cost_usd),
            "run_times": {
                "queued": when(run.queued_at),
                "started": when(run.started_at),
                "finished": when(run.finished_at),
            },
            "step_rows": [step_row(step) for step in steps],
            "pending": [
                self.pending_row(request, run, step, role)
                for step in steps
                if step.status == StepStatus.WAITING_APPROVAL
            ],
            "events": _with_payload_text(events.get_page(request.GET.get("events_page"))),
            "may_cancel": may_operate
            and run.status in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING_APPROVAL),
            "may_retry": may_operate and run.status in (RunStatus.FAILED, RunStatus.CANCELLED),
        }

    def pending_row(self, request, run: Run, step: RunStep, role: str | None) -> dict:
        needed = services.approver_role(run, step.key, step)
        may = request.user.has_perm("runs.change_runstep") and Role.at_least(role, needed)
        if step.hold.get("staff_only") and not request.user.is_staff:
            may = False
        return {"step": step, "needed": needed, "may_decide": may, "reason": step.hold.get("reason", "")}

    def _run_or_404(self, request, run_id) -> Run:
        return get_object_or_404(self.get_queryset(request).select_related("workflow", "workflow_version"), pk=run_id)

    def _back(self, run: Run) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:runs_run_change", args=[run.pk]))

    def _operate(self, request, run_id, verb: str, says: str, act):
        run = self._run_or_404(request, run_id)
        if not (
            self.has_operate_permission(request) and Role.at_least(role_of(request, run.project_id), Role.DEVELOPER)
        ):
            raise PermissionDenied
        if request.method == "POST":
            try:
                message = act(run)
            except (services.TransitionRefused, ValidationError, Refused) as exc:
                self.message_user(request, f"{run}: {exc}", level=messages.WARNING)
            else:
                self.message_user(request, message, level=messages.SUCCESS)
            return self._back(run)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{verb.capitalize()} {run}?",
            "run": run,
            "verb": verb,
            "says": says,
        }
        return TemplateResponse(request, "admin/runs/run/confirm.html", context)

    def cancel_view(self, request, run_id):
        def act(run):
            services.run_cancel(run=run)
            return f"{run}: cancelling."

        return self._operate(request, run_id, "cancel", CANCEL_SAYS, act)

    def retry_view(self, request, run_id):
        def act(run):
            retry, _ = services.run_retry(run=run, user=request.user)
            return f"{run}: retried as {retry.short_id}."

        return self._operate(request, run_id, "retry", RETRY_SAYS, act)

    def decide_view(self, request, run_id, key):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        run = self._run_or_404(request, run_id)
        if not request.user.has_perm("runs.change_runstep"):
            raise PermissionDenied
        decision = Decision.APPROVED if request.POST.get("decision") == "approve" else Decision.REJECTED
        try:
            services.step_decide(
                run=run,
                key=key,
                user=request.user,
                role=role_of(request, run.project_id),
                decision=decision,
                comment=request.POST.get("comment", "")[:2000],
            )
        except (services.TransitionRefused, PermissionDenied, ValidationError) as exc:
            self.message_user(request, f"Step {key}: {_text(exc)}", level=messages.WARNING)
        else:
            self.message_user(request, f"Step {key}: {decision}.", level=messages.SUCCESS)
        return self._back(run)


def _with_payload_text(page):
    for event in page:
        event.payload_text = excerpt(event.payload)
    return page


def _text(exc: Exception) -> str:
    return "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)


def excerpt(value) -> str:
    if value in (None, "", {}, []):
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= EXCERPT else f"{text[:EXCERPT]}…"


def step_row(step: RunStep) -> dict:
    return {
        "step": step,
        "status": badge(step.status, step.get_status_display()),
        "what": step.agent.slug if step.agent else step.tool.slug if step.tool else "",
        "model": f"{step.provider}/{step.model}" if step.model else "",
        "tokens": f"{step.input_tokens:,} / {step.output_tokens:,}",
        "cost": usd(step.cost_usd),
        "latency": millis(step.latency_ms),
        "duration": duration(step.started_at, step.finished_at),
        "output": excerpt(step.output),
        "error": step.error.get("message", "") if isinstance(step.error, dict) else excerpt(step.error),
    }


# ------------------------------------------------------------------------------
# Steps: the approvals inbox is this list filtered to "waiting for approval"
# ------------------------------------------------------------------------------
class WaitingFilter(admin.SimpleListFilter):
    title = "approvals"
    parameter_name = "waiting"

    def lookups(self, request, model_admin):
        return [("yes", "Waiting for approval")]

    def queryset(self, request, queryset):
        return queryset.filter(status=StepStatus.WAITING_APPROVAL) if self.value() == "yes" else queryset


@admin.register(RunStep)
class RunStepAdmin(ProjectScopedAdmin):
    project_path = "run__project"
    list_display = ["step_label", "run", "project", "kind", "status_badge", "attempt", "cost", "latency", "finished"]
    list_filter = [WaitingFilter, "status", StepProjectFilter, StepWorkflowFilter, "kind"]
    list_select_related = ["run__workflow", "run__project"]
    search_fields = ["=run__id", "key"]
    show_full_result_count = False
    readonly_fields = [f.name for f in RunStep._meta.fields]
    actions = ["approve", "reject"]
    # The button shows from developer up; each step's own role is checked by the service.
    action_roles = {"approve": Role.DEVELOPER, "reject": Role.DEVELOPER, "delete_selected": Role.ADMIN}
    delete_role = Role.ADMIN

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_decide_permission(self, request) -> bool:
        return request.user.has_perm("runs.change_runstep")  # as for runs: viewing is not deciding

    @admin.display(description="step", ordering="key")
    def step_label(self, step: RunStep) -> str:
        return step.key

    @admin.display(description="project")
    def project(self, step: RunStep) -> str:
        return step.run.project.name

    @admin.display(description="status", ordering="status")
    def status_badge(self, step: RunStep) -> str:
        return badge(step.status, step.get_status_display())

    @admin.display(description="cost", ordering="cost_usd")
    def cost(self, step: RunStep) -> str:
        return usd(step.cost_usd)

    @admin.display(description="latency", ordering="latency_ms")
    def latency(self, step: RunStep) -> str:
        return millis(step.latency_ms)

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, step: RunStep) -> str:
        return when(step.finished_at)

    def _decide(self, request, queryset, decision: str) -> None:
        # Each step's own role applies: the gate's or the holding policy's (superusers act as owners).
        waiting = queryset.filter(status=StepStatus.WAITING_APPROVAL).select_related(
            "run__workflow_version", "run__workflow"
        )
        for step in waiting:
            try:
                services.step_decide(
                    run=step.run,
                    key=step.key,
                    user=request.user,
                    role=role_of(request, step.run.project_id),
                    decision=decision,
                )
            except (services.TransitionRefused, PermissionDenied, ValidationError) as exc:
                self.message_user(request, f"{step.run} · {step.key}: {_text(exc)}", level=messages.WARNING)
        self.message_user(request, f"Recorded {decision} where a decision was awaited.")

    @admin.action(description="Approve selected steps", permissions=["decide"])
    def approve(self, request, queryset):
        self._decide(request, queryset, Decision.APPROVED)

    @admin.action(description="Reject selected steps", permissions=["decide"])
    def reject(self, request, queryset):
        self._decide(request, queryset, Decision.REJECTED)


@admin.register(Approval)
class ApprovalAdmin(ProjectScopedAdmin):
    project_path = "step__run__project"
    list_display = ["step", "decision", "decided_by", "decided_at"]
    list_filter = ["decision"]
    list_select_related = ["step", "decided_by"]
    readonly_fields = ["step", "decision", "decided_by", "comment", "decided_at"]
    delete_role = Role.ADMIN

    def has_add_permission(self, request) -> bool:
        return False
