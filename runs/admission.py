"""Run-level policies: may a run start now (rate limits, exhausted budgets), and may a queued run
take a slot (concurrency limits). Call-level policies are asked in runs.engine.calls."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from policies.choices import Outcome, PolicyAction, PolicyKind, Stage
from policies.exceptions import PolicyRefused
from policies.models import Policy, PolicyDecision
from policies.money import usd
from policies.selectors import budget_status, policies_for
from policies.services import lock_scopes

from .choices import EventType, RunStatus
from .engine.transitions import emit
from .models import Run

ADMISSION_KINDS = (PolicyKind.RATE_LIMIT, PolicyKind.BUDGET)
SLOT_HOLDERS = (RunStatus.RUNNING, RunStatus.WAITING_APPROVAL, RunStatus.CANCELLING)
_PERIOD = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1)}


@dataclass
class AdmissionWarning:
    policy: Policy
    reason: str


def admit(*, workflow, api_key=None) -> list[AdmissionWarning]:
    """Raise PolicyRefused when a blocking policy refuses the run; return the warnings to record
    once the run exists. Call inside the transaction that creates the run: the limits stay
    locked (lock_scopes) until it commits, so two starts at once cannot both take a rate limit's last run."""
    policies = policies_for(workflow.project_id, ADMISSION_KINDS)
    if not policies:
        return []
    lock_scopes(policies, project_id=workflow.project_id)
    warnings = []
    for policy in policies:
        refusal = _refusal(policy, workflow, api_key)
        if refusal is None:
            continue
        if policy.action == PolicyAction.BLOCK:
            raise refusal
        if policy.action == PolicyAction.WARN:
            warnings.append(AdmissionWarning(policy, refusal.reason))
    return warnings


def admitted(*, workflow, api_key, create: Callable[[], Run]) -> Run:
    """Ask the run-level policies and write the run (``create``) in one transaction, with the
    warnings recorded on it. A refusal rolls the run back, then is recorded and raised."""
    try:
        with transaction.atomic():
            warnings = admit(workflow=workflow, api_key=api_key)
            run = create()
            record_warnings(run, warnings)
    except PolicyRefused as refusal:
        record_refusal(workflow.project_id, refusal)
        raise
    return run


def _refusal(policy: Policy, workflow, api_key) -> PolicyRefused | None:
    if policy.kind == PolicyKind.RATE_LIMIT:
        return _rate_refusal(policy, workflow, api_key)
    return _budget_refusal(policy, workflow)


def _rate_refusal(policy: Policy, workflow, api_key) -> PolicyRefused | None:
    config = policy.config
    if config.get("scope") == "api_key" and api_key is None:
        return None  # a per-key limit does not count people in the frontend
    period = _PERIOD[config["per"]]
    since = timezone.now() - period
    started = Run.objects.filter(project_id=workflow.project_id, queued_at__gte=since)
    if config.get("scope") == "api_key":
        started = started.filter(api_key=api_key)
    count = started.count()
    if count < config["max_runs"]:
        return None
    # A new run fits once enough of the window's runs have aged out of it: with a limit lowered
    # since, more than one must.
    oldest_to_leave = started.order_by("queued_at").values_list("queued_at", flat=True)[count - config["max_runs"]]
    retry_after = max(1, int((oldest_to_leave + period - timezone.now()).total_seconds()) + 1)
    who = "this API key" if config.get("scope") == "api_key" else "the project"
    reason = (
        f"Rate limit {policy.name!r}: {who} started {count} runs in the last {config['per']}; "
        f"the limit is {config['max_runs']}."
    )
    return PolicyRefused(policy, reason, status_code=429, retry_after=retry_after)


def _budget_refusal(policy: Policy, workflow) -> PolicyRefused | None:
    # Budgets narrowed to an agent or a model are kept call by call: this run may not use them.
    config = policy.config
    if config.get("agent") or config.get("model") or config.get("workflow", workflow.slug) != workflow.slug:
        return None
    status = budget_status(policy, workflow.project_id)
    if not status.exhausted:
        return None
    reason = (
        f"Budget {policy.name!r} is exhausted: ${usd(status.spent + status.reserved)} of ${usd(status.amount)} "
        f"used until {status.window_end:%Y-%m-%d %H:%M} UTC."
    )
    return PolicyRefused(policy, reason, status_code=422)


REFUSAL_RECORD_INTERVAL = timedelta(seconds=10)


def record_refusal(project_id, refusal: PolicyRefused) -> None:
    """Called once the refused run's transaction has rolled back, so the decision stays. A client
    retrying against a 429 in a loop is recorded once per policy every 10 seconds, not per try."""
    recent = PolicyDecision.objects.filter(
        policy=refusal.policy,
        project_id=project_id,
        stage=Stage.ADMISSION,
        outcome=Outcome.BLOCKED,
        created_at__gte=timezone.now() - REFUSAL_RECORD_INTERVAL,
    )
    if not recent.exists():
        _decision(project_id, None, refusal.policy, Outcome.BLOCKED, refusal.reason)


def _decision(project_id, run, policy, outcome, reason) -> PolicyDecision:
    return PolicyDecision.objects.create(
        policy=policy, project_id=project_id, run=run, stage=Stage.ADMISSION, outcome=outcome, reason=reason[:500]
    )


def record_warnings(run: Run, warnings: list[AdmissionWarning]) -> None:
    for warning in warnings:
        _decision(run.project_id, run, warning.policy, Outcome.WARNED, warning.reason)
        emit(run.pk, EventType.POLICY_DECISION, payload=_payload(warning.policy, Outcome.WARNED, warning.reason))


def _payload(policy: Policy | None, outcome: str, reason: str, stage: str = Stage.ADMISSION) -> dict:
    return {
        "policy": policy.pk if policy else None,
        "policy_name": policy.name if policy else "",
        "stage": stage,
        "outcome": outcome,
        "reason": reason,
    }


# ------------------------------------------------------------------------------
# Concurrency: slots for queued runs, in queue order
# ------------------------------------------------------------------------------
def _agents_of(definition: dict) -> set[str]:
    return {step["agent"] for step in definition.get("steps", []) if step.get("kind") == "agent"}


def _in_scope(policy: Policy, row: dict) -> bool:
    config = policy.config
    if config.get("workflow") and config["workflow"] != row["workflow__slug"]:
        return False
    if config.get("agent"):
        return config["agent"] == row["task_agent__slug"] or config["agent"] in row["agents"]
    return True


def _queue_key(row: dict) -> tuple:
    """Who goes first among queued runs: higher priority, then the earlier run."""
    return (-row["priority"], row["queued_at"], str(row["pk"]))


def _contenders(run: Run, policies: list[Policy]) -> list[dict]:
    """The project's runs that hold a slot or wait for one, with what scopes are matched on."""
    fields = ["pk", "status", "priority", "queued_at", "waiting_on", "workflow__slug", "task_agent__slug"]
    by_agent = any(p.config.get("agent") for p in policies)
    if by_agent:
        fields.append("workflow_version__definition")
    waiting = Q(status=RunStatus.QUEUED, started_at__isnull=True)
    rows = list(Run.objects.filter(Q(status__in=SLOT_HOLDERS) | waiting, project_id=run.project_id).values(*fields))
    for row in rows:
        row["agents"] = _agents_of(row.pop("workflow_version__definition", None) or {})
    return rows


def _full_policies(run: Run, policies: list[Policy]) -> list[tuple[Policy, str]]:
    """Every limit over the run with no slot for it now, highest priority first. Runs ahead in the
    queue count only when they wait for this limit's slot (or nothing yet): one held by another
    limit will not take this one's slot."""
    rows = _contenders(run, policies)
    mine = next((row for row in rows if row["pk"] == run.pk), None)
    if mine is None:
        return []
    full = []
    for policy in policies:
        if not _in_scope(policy, mine):
            continue
        scoped = [row for row in rows if _in_scope(policy, row)]
        active = sum(row["status"] in SLOT_HOLDERS for row in scoped)
        ahead = sum(
            row["status"] == RunStatus.QUEUED
            and row["waiting_on"] in (None, policy.pk)
            and _queue_key(row) < _queue_key(mine)
            for row in scoped
        )
        limit = policy.config["max_active"]
        if active + ahead >= limit:
            reason = f"Concurrency limit {policy.name!r}: {active} of {limit} runs active, {ahead} ahead in the queue."
            full.append((policy, reason))
    return full


def may_take_slot(run: Run) -> bool:
    """Whether a queued run may start now under every concurrency limit over it. A run that may
    not is held (``waiting_on``) and tried again when a run in its project ends. Call inside the
    advance's transaction: the limits stay locked (lock_scopes) until it commits, so two advances cannot
    both give the last slot away."""
    policies = policies_for(run.project_id, [PolicyKind.CONCURRENCY])
    if not policies:
        return _clear_hold(run)
    lock_scopes(policies, project_id=run.project_id)
    full = _full_policies(run, policies)
    blocking = next(((p, reason) for p, reason in full if p.action == PolicyAction.BLOCK), None)
    if blocking is None:
        for policy, reason in full:  # warnings only: the run starts in this advance, warned once
            _decision(run.project_id, run, policy, Outcome.WARNED, reason)
            emit(run.pk, EventType.POLICY_DECISION, payload=_payload(policy, Outcome.WARNED, reason))
        return _clear_hold(run)
    policy, reason = blocking
    if run.waiting_on_id != policy.pk:
        Run.objects.filter(pk=run.pk).update(waiting_on=policy)
        run.waiting_on = policy
        _decision(run.project_id, run, policy, Outcome.QUEUED, reason)
        emit(run.pk, EventType.RUN_HELD, payload=_payload(policy, Outcome.QUEUED, reason))
    return False


def _clear_hold(run: Run) -> bool:
    if run.waiting_on_id is not None:
        Run.objects.filter(pk=run.pk).update(waiting_on=None)
        run.waiting_on = None
    return True


def held_runs(project_id, limit: int = 200) -> list:
    """Queued runs of a project waiting for a slot, first in line first. Call in the transaction
    that ends a run: it waits for the project's concurrency policies first. A run being held at
    this moment has seen the ending run still active; without the lock its hold could commit just
    after this list was read, and it would wait for the next run to end (or the reaper) while its
    slot stood free. With it, the hold is committed and listed here, or waits and sees the end."""
    policies = policies_for(project_id, [PolicyKind.CONCURRENCY])
    if not policies:
        return []  # no limit to wait on: runs a deleted or disabled limit held are nudged by the reaper
    lock_scopes(policies, project_id=project_id)
    return list(
        Run.objects.filter(project_id=project_id, status=RunStatus.QUEUED, waiting_on__isnull=False)
        .order_by("-priority", "queued_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
