"""Run-level policies, the runs side: the facts the judges need about runs (policies/admission.py
judges and records the decisions), the run held or released, and the events on it. Call-level
policies are asked in runs.engine.calls."""

from collections.abc import Callable
from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from policies import admission as policy_admission
from policies.admission import AdmissionWarning
from policies.choices import Outcome, Stage
from policies.exceptions import PolicyRefused
from policies.kinds.base import Admission, Contender
from policies.models import Policy

from ..choices import EventType, RunStatus
from ..models import Run
from .transitions import emit

SLOT_HOLDERS = (RunStatus.RUNNING, RunStatus.WAITING_APPROVAL, RunStatus.CANCELLING)


def admit(*, workflow, api_key=None, policies: list[Policy] | None = None) -> list[AdmissionWarning]:
    """Raise PolicyRefused when a blocking policy refuses the run; return the warnings to record
    once the run exists. Call inside the transaction that creates the run (see admission_judge).
    ``policies``: the project's run policies as already read (policy_admission.run_policies)."""
    admission = Admission(
        project_id=workflow.project_id,
        workflow_slug=workflow.slug,
        api_key=api_key,
        runs_started=lambda since, key: _runs_started(workflow.project_id, since, key),
    )
    return policy_admission.admission_judge(admission=admission, policies=policies)


def _runs_started(project_id, since: datetime, api_key):
    started = Run.objects.filter(project_id=project_id, queued_at__gte=since)
    if api_key is not None:
        started = started.filter(api_key=api_key)
    return started.order_by("queued_at").values_list("queued_at", flat=True)


def admitted(*, workflow, api_key, create: Callable[[bool], Run]) -> Run:
    """Ask the run-level policies and write the run (``create``) in one transaction, with the
    warnings recorded on it. A refusal rolls the run back, then is recorded and raised.
    ``create(start)``: ``start`` is True when no concurrency limit applies to the project, so the
    run may queue its first steps as it is written, with no advance first (see runs.services)."""
    try:
        with transaction.atomic():
            policies = policy_admission.run_policies(workflow.project_id)
            warnings = admit(workflow=workflow, api_key=api_key, policies=policies)
            run = create(not policy_admission.has_slot_limits(policies))
            record_warnings(run, warnings)
    except PolicyRefused as refusal:
        record_refusal(workflow.project_id, refusal)
        raise
    return run


def record_refusal(project_id, refusal: PolicyRefused) -> None:
    """Called once the refused run's transaction has rolled back, so the decision stays."""
    policy_admission.refusal_record(project_id=project_id, refusal=refusal)


def record_warnings(run: Run, warnings: list[AdmissionWarning]) -> None:
    for warning in warnings:
        _decided(run, warning.policy, Outcome.WARNED, warning.reason, EventType.POLICY_DECISION)


def _decided(run: Run, policy: Policy, outcome: str, reason: str, event_type: str) -> None:
    policy_admission.admission_decision_record(
        project_id=run.project_id, run_id=run.pk, policy=policy, outcome=outcome, reason=reason
    )
    emit(run.pk, event_type, payload=_payload(policy, outcome, reason))


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
def _agents_of(definition: dict) -> frozenset[str]:
    return frozenset(step["agent"] for step in definition.get("steps", []) if step.get("kind") == "agent")


def _contenders(project_id, with_agents: bool) -> list[Contender]:
    """The project's runs that hold a slot or wait for one, with what scopes are matched on."""
    fields = ["pk", "status", "priority", "queued_at", "waiting_on", "workflow__slug", "task_agent__slug"]
    if with_agents:
        fields.append("workflow_version__definition")
    waiting = Q(status=RunStatus.QUEUED, started_at__isnull=True)
    rows = Run.objects.filter(Q(status__in=SLOT_HOLDERS) | waiting, project_id=project_id).values(*fields)
    return [
        Contender(
            pk=row["pk"],
            holds_slot=row["status"] in SLOT_HOLDERS,
            waiting=row["status"] == RunStatus.QUEUED,
            priority=row["priority"],
            queued_at=row["queued_at"],
            waiting_on=row["waiting_on"],
            workflow_slug=row["workflow__slug"],
            task_agent_slug=row["task_agent__slug"],
            agents=_agents_of(row.get("workflow_version__definition") or {}),
        )
        for row in rows
    ]


def may_take_slot(run: Run, policies: list[Policy] | None = None) -> bool:
    """Whether a queued run may start now under every concurrency limit over it. A run that may
    not is held (``waiting_on``) and tried again when a run in its project ends. Call inside the
    advance's transaction (see slot_judge for the lock)."""
    verdict = policy_admission.slot_judge(
        project_id=run.project_id,
        run_id=run.pk,
        contenders=lambda with_agents: _contenders(run.project_id, with_agents),
        policies=policies,
    )
    if verdict is None:
        return _clear_hold(run)
    if verdict.blocking is None:
        for policy, reason in verdict.full:  # warnings only: the run starts in this advance, warned once
            _decided(run, policy, Outcome.WARNED, reason, EventType.POLICY_DECISION)
        return _clear_hold(run)
    policy, reason = verdict.blocking
    if run.waiting_on_id != policy.pk:
        Run.objects.filter(pk=run.pk).update(waiting_on=policy)
        run.waiting_on = policy
        _decided(run, policy, Outcome.QUEUED, reason, EventType.RUN_HELD)
    return False


def slot_wait(*, workflow, definition: dict, priority: int = 0) -> tuple[Policy, str] | None:
    """The concurrency limit a new run of ``definition`` would wait on if it were queued now, and
    why; None when it would start. Asks the limits as a queued run does (may_take_slot), for a run
    that does not exist: call inside a transaction that is rolled back (slot_judge locks)."""
    mine = Contender(
        pk=None,
        holds_slot=False,
        waiting=True,
        priority=priority,
        queued_at=timezone.now(),
        waiting_on=None,
        workflow_slug=workflow.slug,
        task_agent_slug=None,
        agents=_agents_of(definition),
    )
    verdict = policy_admission.slot_judge(
        project_id=workflow.project_id,
        run_id=None,
        contenders=lambda with_agents: [*_contenders(workflow.project_id, with_agents), mine],
    )
    return None if verdict is None else verdict.blocking


def _clear_hold(run: Run) -> bool:
    if run.waiting_on_id is not None:
        Run.objects.filter(pk=run.pk).update(waiting_on=None)
        run.waiting_on = None
    return True


def held_runs(project_id, limit: int = 200, policies: list[Policy] | None = None) -> list:
    """Queued runs of a project waiting for a slot, first in line first. Call in the transaction
    that ends a run: it waits for the project's concurrency policies first. A run being held at
    this moment has seen the ending run still active; without the lock its hold could commit just
    after this list was read, and it would wait for the next run to end (or the reaper) while its
    slot stood free. With it, the hold is committed and listed here, or waits and sees the end."""
    if not policy_admission.slot_limits_locked(project_id, policies):
        return []  # no limit to wait on: runs a deleted or disabled limit held are nudged by the reaper
    return list(
        Run.objects.filter(project_id=project_id, status=RunStatus.QUEUED, waiting_on__isnull=False)
        .order_by("-priority", "queued_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
