"""The one writer of notices, and what each cause tells: a run that ended, a step waiting for a
decision, a policy that blocked, a schedule that paused, a budget past a threshold. Each is called
in its cause's transaction (notices/receivers.py connects them), so a notice commits or vanishes
with what it reports."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from policies.choices import Outcome, Window
from policies.kinds.base import Call
from policies.models import ZERO, Policy
from policies.selectors import BudgetStatus, BudgetUse, budget_status, budget_status_from
from runs.choices import EventType
from runs.models import Run, RunEvent, RunStep
from schedules.models import Schedule

from .choices import NoticeType
from .models import BudgetCrossing, Notice
from .signals import published

#: Run events that are notices of their own, by the notice type they become.
RUN_NOTICES = {
    EventType.RUN_SUCCEEDED: NoticeType.RUN_SUCCEEDED,
    EventType.RUN_FAILED: NoticeType.RUN_FAILED,
    EventType.RUN_CANCELLED: NoticeType.RUN_CANCELLED,
    EventType.STEP_WAITING_APPROVAL: NoticeType.STEP_WAITING_APPROVAL,
}
#: The budget thresholds reported, in percent of the budget's amount.
THRESHOLDS = (50, 80, 100)


def publish(project_id, type_: str, *, run=None, step=None, schedule=None, payload: dict | None = None) -> Notice:
    """Record a notice in the caller's transaction and tell the receivers, in that transaction."""
    with transaction.atomic(savepoint=False):
        notice = Notice.objects.create(
            project_id=project_id, type=type_, run=run, step=step, schedule=schedule, payload=payload or {}
        )
        published.send(sender=Notice, notice=notice)
    return notice


def admin_url(path: str) -> str:
    """An absolute link into the admin, e.g. for a Slack message; SPARKOPS_BASE_URL is the origin."""
    return settings.SPARKOPS_BASE_URL.rstrip("/") + path


# ------------------------------------------------------------------------------
# Runs: from the events the engine writes
# ------------------------------------------------------------------------------
def notices_from_events(*, run_id, events: list[RunEvent]) -> list[Notice]:
    """The notices a batch of a run's events makes; the run is read only when one does."""
    wanted = [event for event in events if _notice_type(event)]
    if not wanted:
        return []
    run = Run.objects.select_related("workflow").get(pk=run_id)
    return [_from_event(run, event) for event in wanted]


def _notice_type(event: RunEvent) -> str | None:
    if event.type == EventType.POLICY_DECISION:
        return NoticeType.POLICY_BLOCKED if (event.payload or {}).get("outcome") == Outcome.BLOCKED else None
    return RUN_NOTICES.get(event.type)


def _from_event(run: Run, event: RunEvent) -> Notice:
    type_ = _notice_type(event)
    payload = {"run": run_summary(run), "event": {"sequence": event.sequence, "type": event.type}}
    if event.step is not None:
        payload["step"] = _step_summary(event.step)
    if type_ == NoticeType.POLICY_BLOCKED:
        payload["policy"] = _decision_summary(event.payload)
    elif type_ == NoticeType.STEP_WAITING_APPROVAL:
        payload["reason"] = (event.payload or {}).get("reason", "")
    payload["links"] = _run_links(run)
    return publish(run.project_id, type_, run=run, step=event.step, payload=payload)


def run_summary(run: Run) -> dict:
    return {
        "id": str(run.pk),
        "title": run.title,
        "status": run.status,
        "trigger": run.trigger,
        "workflow": {"id": str(run.workflow_id), "slug": run.workflow.slug, "name": run.workflow.name},
        "cost_usd": str(run.cost_usd),
        "input_tokens": run.input_tokens,
        "output_tokens": run.output_tokens,
        "error": run.error,
        "queued_at": _iso(run.queued_at),
        "finished_at": _iso(run.finished_at),
    }


def _step_summary(step: RunStep) -> dict:
    return {"id": step.pk, "key": step.key, "kind": step.kind, "attempt": step.attempt}


def _decision_summary(payload: dict) -> dict:
    policy_id = payload.get("policy")
    name = Policy.objects.filter(pk=policy_id).values_list("name", flat=True).first() if policy_id else None
    return {"id": policy_id, "name": name or "", "stage": payload.get("stage", ""), "reason": payload.get("reason", "")}


def _run_links(run: Run) -> dict:
    return {
        "admin": admin_url(reverse("admin:runs_run_change", args=[run.pk])),
        "api": admin_url(f"/api/v1/runs/{run.pk}"),
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


# ------------------------------------------------------------------------------
# Policies: a refused start, budgets past a threshold
# ------------------------------------------------------------------------------
def notice_admission_refused(*, project_id, policy: Policy, reason: str) -> Notice:
    """A run's start was refused: there is no run, only the policy and why."""
    payload = {"policy": {"id": policy.pk, "name": policy.name, "stage": "admission", "reason": reason}}
    return publish(project_id, NoticeType.POLICY_BLOCKED, payload=payload)


def notices_for_budgets(*, project_id, budgets: list[Policy], call: Call | None = None) -> list[Notice]:
    """Report each threshold a budget's use (spent + reserved) has reached in its current window,
    once per window. Call in the transaction that reserved the spend. ``call``: the call whose
    reservation that was; what its budgets' judges read under their locks, plus its reservation,
    is the use now, so the ledger is not summed again."""
    notices = []
    for policy in budgets:
        status = _status_after(policy, project_id, call)
        if status.amount <= 0:
            continue
        used = status.spent + status.reserved
        window = _window_key(policy, status.window_start)
        for percent in THRESHOLDS:
            if used * 100 >= status.amount * percent and _claim_crossing(policy, project_id, window, percent):
                notices.append(_budget_notice(policy, project_id, status, percent, used))
    return notices


def _status_after(policy: Policy, project_id, call: Call | None) -> BudgetStatus:
    judged = call.budget_uses.get(policy.pk) if call is not None else None
    if judged is None:
        return budget_status(policy, project_id)
    span, use = judged
    reserved = use.reserved + (call.estimate_usd or ZERO)
    return budget_status_from(policy, project_id, span, BudgetUse(use.spent, reserved), timezone.now())


def _window_key(policy: Policy, start: datetime) -> datetime:
    """A calendar window is keyed by its start. A rolling window moves with every call: it is
    keyed by fixed periods of its length counted from 1970, so it reports at most once a period."""
    if policy.config.get("window") != Window.ROLLING:
        return start
    length = timedelta(days=policy.config["days"])
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((start + length - epoch) // length) * length


def _claim_crossing(policy: Policy, project_id, window: datetime, percent: int) -> bool:
    # The race: two reservations at once both find the budget past 80%. The second insert waits
    # for the first's commit and then fails on the unique constraint: one notice.
    try:
        with transaction.atomic():
            BudgetCrossing.objects.create(policy=policy, project_id=project_id, window_start=window, percent=percent)
    except IntegrityError:
        return False
    return True


def _budget_notice(policy: Policy, project_id, status, percent: int, used: Decimal) -> Notice:
    payload = {
        "policy": {"id": policy.pk, "name": policy.name},
        "threshold_percent": percent,
        "amount_usd": str(status.amount),
        "used_usd": str(used),
        "spent_usd": str(status.spent),
        "reserved_usd": str(status.reserved),
        "window": policy.config.get("window"),
        "window_start": _iso(status.window_start),
        "window_end": _iso(status.window_end),
        "links": {"admin": admin_url(reverse("admin:policies_policy_change", args=[policy.pk]))},
    }
    return publish(project_id, NoticeType.BUDGET_THRESHOLD, payload=payload)


# ------------------------------------------------------------------------------
# Schedules
# ------------------------------------------------------------------------------
def notice_schedule_paused(*, schedule: Schedule, reason: str, automatic: bool) -> Notice:
    payload = {
        "schedule": {
            "id": str(schedule.pk),
            "name": schedule.name,
            "cron": schedule.cron,
            "workflow": str(schedule.workflow_id),
        },
        "reason": reason,
        "automatic": automatic,
        "links": {"admin": admin_url(reverse("admin:schedules_schedule_change", args=[schedule.pk]))},
    }
    return publish(schedule.project_id, NoticeType.SCHEDULE_PAUSED, schedule=schedule, payload=payload)
