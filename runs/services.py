"""Run services: start, cancel, retry, decide approvals. The API, the admin, the command line and
schedules all come through here."""

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from audit.choices import Action
from audit.context import current_actor
from audit.services import audit_record
from projects.services import project_require_startable
from sparkops.lib.errors import Refused
from sparkops.roles import Role
from workflows import validation
from workflows.definition import spec_of
from workflows.kinds.approval import DEFAULT_APPROVER_ROLE
from workflows.models import Workflow, WorkflowVersion
from workflows.selectors import latest_published_version

from .choices import RUN_ACTIVE, Decision, EventType, RunStatus, StepStatus, Trigger
from .engine import admission, core, dispatch
from .engine.core import DISPATCH_GRACE
from .engine.transitions import TransitionRefused, emit, insert_events, move_run, move_step, require_run_status
from .models import Approval, Run, RunStep
from .reuse import StepPlan, reuse_plan

DEFAULT_ATTEMPTS = 3

__all__ = ["TransitionRefused", "run_cancel", "run_retry", "run_start", "step_decide"]


class IdempotencyKeyReused(Refused):
    """An Idempotency-Key already used for a different request in the project: answering with the
    first run would hand the caller an unrelated run as if it were theirs."""

    status_code = 422
    code = "idempotency_key_reused"

    def __init__(self, key: str, run: Run):
        message = (
            f"Idempotency-Key {key!r} was already used for a different request (run {run.pk}); "
            "send a new key for a new request."
        )
        super().__init__(message, errors={"idempotency_key": [message]})
        self.run = run


def request_fingerprint(**request: Any) -> str:
    """A digest of what a run-creating request asked for, stored with the run it created, so a
    repeated Idempotency-Key can be told apart from a reused one."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(project_id: Any, key: str, fingerprint: str) -> Run | None:
    """The run an earlier request with this key created, if any; refused if it asked for something else."""
    if not key:
        return None
    existing = Run.objects.filter(project_id=project_id, idempotency_key=key).first()
    # Runs from before fingerprints were stored have none: they replay as they always did.
    if existing is not None and existing.request_fingerprint and existing.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused(key, existing)
    return existing


def _pinned_version(workflow: Workflow, version: WorkflowVersion | None) -> WorkflowVersion:
    if version is not None and version.workflow_id != workflow.pk:
        raise ValidationError({"version": "That version belongs to another workflow."})
    version = version or latest_published_version(workflow)
    if version is None or not version.published:
        raise ValidationError({"version": "Runs pin a published version; publish one first."})
    if not workflow.active:
        raise ValidationError({"workflow": "The workflow is inactive."})
    return version


def run_start(
    *,
    workflow: Workflow,
    inputs: dict | None = None,
    user: User | None = None,
    version: WorkflowVersion | None = None,
    trigger: str = Trigger.API,
    idempotency_key: str = "",
    title: str = "",
    priority: int = 0,
    task_agent=None,
    api_key=None,
    project=None,
) -> tuple[Run, bool]:
    """Validate, ask the run-level policies, and write the run and its steps at once; the engine
    picks it up after commit. Returns (run, created): a repeated idempotency key returns the first
    run. Raises PolicyRefused (429 or 422) when a rate limit or an exhausted budget refuses it.
    ``project``: the workflow's project as read for this request (the API reads it with the
    workflow): whether it is archived or frozen is judged on it instead of read again."""
    fingerprint = request_fingerprint(
        action="start",
        workflow=workflow.pk,
        version=version.pk if version else None,
        inputs={} if inputs is None else inputs,
        title=title,
        priority=priority,
        task_agent=task_agent.pk if task_agent else None,
    )
    if existing := _replay(workflow.project_id, idempotency_key, fingerprint):
        return existing, False
    project_require_startable(project_id=workflow.project_id, project=project)
    version = _pinned_version(workflow, version)
    inputs = {} if inputs is None else inputs
    if problems := validation.input_errors(version.input_schema, inputs):
        raise ValidationError({"inputs": problems})
    fields = {"title": title, "priority": priority, "task_agent": task_agent, "api_key": api_key}
    fields["request_fingerprint"] = fingerprint if idempotency_key else ""

    def create(start: bool) -> Run:
        return _create(workflow, version, inputs, user, trigger, idempotency_key, start=start, **fields)

    try:
        run = admission.admitted(workflow=workflow, api_key=api_key, create=create)
    except IntegrityError:  # the same idempotency key, twice at once: the first one wins
        if (first := _replay(workflow.project_id, idempotency_key, fingerprint)) is None:
            raise
        return first, False
    return run, True


def _create(workflow, version, inputs, user, trigger, idempotency_key, *, start: bool = False, **fields) -> Run:
    """The run, its steps and its first events in three statements. The run is born with its event
    numbers taken (nobody else can write events of a run that does not exist yet), and comes back
    with its steps as written, so the answer to the request needs no second read.

    With ``start`` (no concurrency limit to wait for), the steps ready at once are written queued
    and sent to the workers on commit, as the run's first advance would have: that advance, its
    task and its transaction are saved. The run stays ``queued`` until the first claim starts it
    (runs.engine.core.claim). Otherwise the first advance decides, after commit."""
    ready = set(core.ready_at_creation(version.definition)) if start else set()
    run = Run.objects.create(
        project_id=workflow.project_id,
        workflow=workflow,
        workflow_version=version,
        trigger=trigger,
        created_by=user,
        inputs=inputs,
        idempotency_key=idempotency_key,
        event_seq=1 + len(ready),
        **fields,
    )
    steps = _steps_for(run, version.definition)
    queued = [step for step in steps if step.key in ready]
    core.mark_queued(queued)
    RunStep.objects.bulk_create(steps)
    events = [(EventType.RUN_QUEUED, None, {"trigger": trigger, "version": version.number})]
    events += [(EventType.STEP_QUEUED, step, {"key": step.key}) for step in queued]
    insert_events(run.pk, len(events), events)
    run._prefetched_objects_cache = {"steps": steps}  # run.steps.all(): these, in position order
    if queued:
        for step in queued:
            dispatch.step_on_commit(step.pk)
    else:
        dispatch.advance_on_commit(run.pk)
    return run


def _steps_for(run: Run, definition: dict, plan: list[StepPlan] | None = None) -> list[RunStep]:
    decided = {step.key: step for step in plan or []}
    steps = []
    for position, spec in enumerate(definition["steps"]):
        step = RunStep(
            run=run,
            key=spec["key"],
            kind=spec["kind"],
            position=position,
            max_attempts=spec.get("retry", {}).get("attempts", DEFAULT_ATTEMPTS),
        )
        if (decision := decided.get(spec["key"])) is not None:
            step.plan_reason = decision.reason
        previous = decision.reused if decision is not None else None
        if previous is not None:
            step.status, step.output, step.input, step.reused_from = (
                previous.status,  # succeeded, or skipped by a condition that is reused too
                previous.output,
                previous.input,
                previous,
            )
            step.finished_at = timezone.now()
        steps.append(step)
    return steps


def run_cancel(*, run: Run) -> Run:
    """Ask a run to stop: no new step starts, running steps stop at their next check.
    Cancelling twice is harmless; cancelling a finished run is refused."""
    if run.status in (RunStatus.CANCELLING, RunStatus.CANCELLED):
        return run
    require_run_status(run, RUN_ACTIVE, "cancel")
    was = run.status
    with transaction.atomic():
        if not move_run(
            run, RunStatus.CANCELLING, EventType.RUN_CANCELLING, payload={"by": current_actor().as_payload()}
        ):
            run.refresh_from_db()
            if run.status not in (RunStatus.CANCELLING, RunStatus.CANCELLED):
                raise TransitionRefused(f"Cannot cancel a run that is {run.status}.")
            return run
        audit_record(action=Action.CANCEL, obj=run, project_id=run.project_id, changes={"status": [was, run.status]})
    dispatch.advance_now(run.pk)
    return run


def run_retry(
    *, run: Run, user: User | None = None, inputs: dict | None = None, api_key=None, idempotency_key: str = ""
) -> tuple[Run, bool]:
    """A new run of the same pinned version that reuses what the failed run did, where nothing the
    step read has changed (runs/reuse.py: its rendered input is identical and every step it depends
    on is reused); everything else runs again. Admitted like any new run: rate limits and exhausted
    budgets apply. Returns (run, created): a repeated idempotency key returns the first retry, as
    for run_start."""
    inputs = run.inputs if inputs is None else inputs
    fingerprint = request_fingerprint(action="retry", parent=run.pk, inputs=inputs)
    if existing := _replay(run.project_id, idempotency_key, fingerprint):
        return existing, False
    require_run_status(run, {RunStatus.FAILED, RunStatus.CANCELLED}, "retry")
    project_require_startable(project_id=run.project_id)
    if problems := validation.input_errors(run.workflow_version.input_schema, inputs):
        raise ValidationError({"inputs": problems})
    plan = reuse_plan(run=run, inputs=inputs)
    key = {"idempotency_key": idempotency_key, "request_fingerprint": fingerprint if idempotency_key else ""}
    child = Child(trigger=Trigger.RETRY, inputs=inputs, plan=plan, user=user, api_key=api_key, key=key)
    return admit_child(run, child, fingerprint)


@dataclass
class Child:
    """A run made from a finished one (a retry or a replay): what it runs with and what it keeps."""

    trigger: str
    inputs: dict
    plan: list[StepPlan]
    user: User | None = None
    api_key: Any = None
    key: dict = field(default_factory=dict)  # idempotency_key and request_fingerprint
    from_step: str = ""
    overrides: dict = field(default_factory=dict)


def admit_child(parent: Run, child: Child, fingerprint: str) -> tuple[Run, bool]:
    """Admit and write ``child`` of ``parent``, as run_start does a new run."""
    try:
        made = admission.admitted(
            workflow=parent.workflow, api_key=child.api_key, create=lambda start: _create_child(parent, child)
        )
    except IntegrityError:  # the same idempotency key, twice at once: the first one wins
        if (first := _replay(parent.project_id, child.key.get("idempotency_key", ""), fingerprint)) is None:
            raise
        return first, False
    return made, True


def _record_child(run: Run, made: Run, child: "Child") -> None:
    """The trail's line on the parent: who retried or replayed it, and as which run."""
    if child.trigger == Trigger.RETRY:
        action, changes = Action.RETRY, {"retried_as": [None, str(made.pk)]}
    else:
        action, changes = Action.REPLAY, {"replayed_as": [None, str(made.pk)]}
        if child.from_step:
            changes["from_step"] = [None, child.from_step]
        if child.overrides:
            changes["overrides"] = [None, child.overrides]
    audit_record(action=action, obj=run, project_id=run.project_id, changes=changes)


def _create_child(run: Run, child: Child) -> Run:
    made = Run.objects.create(
        project_id=run.project_id,
        workflow_id=run.workflow_id,
        workflow_version=run.workflow_version,
        trigger=child.trigger,
        created_by=child.user,
        inputs=child.inputs,
        parent=run,
        from_step=child.from_step,
        overrides=child.overrides,
        title=run.title,
        priority=run.priority,
        task_agent=run.task_agent,
        api_key=child.api_key,
        **child.key,
    )
    RunStep.objects.bulk_create(_steps_for(made, run.workflow_version.definition, plan=child.plan))
    payload = {"trigger": child.trigger, "parent": str(run.pk)}
    if child.from_step:
        payload["from_step"] = child.from_step
    emit(made.pk, EventType.RUN_QUEUED, payload=payload)
    for step in made.steps.filter(reused_from__isnull=False):
        emit(
            made.pk,
            EventType.STEP_REUSED,
            step=step,
            payload={"key": step.key, "from_run": str(run.pk), "reason": step.plan_reason},
        )
    dispatch.advance_on_commit(made.pk)
    _record_child(run, made, child)
    return made


#: Nobody below this decides an approval, whatever a gate or policy names: viewers only read,
#: and versions published before gates were refused a viewer role may still name one.
MIN_APPROVER_ROLE = Role.DEVELOPER


def approver_role(run: Run, key: str, step: RunStep | None = None) -> str:
    """The role an approval gate names, or the one the policy that parked a step asks for,
    raised to MIN_APPROVER_ROLE."""
    if step is not None and step.hold:
        named = step.hold.get("role") or Role.ADMIN
    else:
        named = spec_of(run.workflow_version.definition, key).get("role", DEFAULT_APPROVER_ROLE)
    return named if Role.at_least(named, MIN_APPROVER_ROLE) else MIN_APPROVER_ROLE


@transaction.atomic
def step_decide(*, run: Run, key: str, user: User, role: str | None, decision: str, comment: str = "") -> RunStep:
    """Approve or reject an approval step. A rejection fails the step, and with it the run."""
    step = RunStep.objects.filter(run=run, key=key).first()
    if step is None:
        raise ValidationError({"key": f"The run has no step {key!r}."})
    needed = approver_role(run, key, step)
    if not Role.at_least(role, needed):
        raise PermissionDenied(f"Deciding this step needs the {needed} role.")
    if step.hold.get("staff_only") and not user.is_staff:
        raise PermissionDenied("A global policy parked this step: only staff decide it.")
    if step.status != StepStatus.WAITING_APPROVAL:
        raise TransitionRefused(f"Step {key!r} is {step.status}, not waiting for approval.")
    approved = decision == Decision.APPROVED
    try:
        with transaction.atomic():
            Approval.objects.create(
                step=step, round=step.hold.get("round", 0), decision=decision, decided_by=user, comment=comment
            )
    except IntegrityError:  # two people decided at once; the first one stands
        raise TransitionRefused(f"Step {key!r} was decided by someone else.") from None
    decided = {"decision": decision, "by": user.email, "actor": current_actor().as_payload(), "comment": comment}
    if approved and step.hold:
        moved = _release_hold(run, step, decided)
    elif approved:
        moved = move_step(
            step,
            [StepStatus.WAITING_APPROVAL],
            StepStatus.SUCCEEDED,
            EventType.STEP_APPROVED,
            payload=decided,
            output={"approved": True, "by": user.email, "comment": comment},
        )
    else:
        error = {"type": "Rejected", "message": f"Rejected by {user.email}: {comment}".rstrip(": "), "permanent": True}
        moved = move_step(
            step,
            [StepStatus.WAITING_APPROVAL],
            StepStatus.FAILED,
            EventType.STEP_REJECTED,
            payload=decided,
            error=error,
        )
    if not moved:
        raise TransitionRefused(f"Step {key!r} was decided by someone else.")
    action = Action.APPROVE if approved else Action.REJECT
    audit_record(
        action=action,
        obj=run,
        project_id=run.project_id,
        changes={f"steps.{key}": [StepStatus.WAITING_APPROVAL, decision]},
    )
    dispatch.advance_on_commit(run.pk)
    return step


def _release_hold(run: Run, step: RunStep, decided: dict) -> bool:
    """A step a policy parked runs again from its start; its attempt does not count. The approval
    lets that policy pass for that subject (a tool, a model, the budget) for the rest of the step,
    and nothing else: another policy, or the same one about another tool, parks it again. The run
    is running again from now: its step may start before the run's next advance."""
    hold = {**step.hold, "granted": [*step.hold.get("granted", []), step.hold["key"]]}
    moved = move_step(
        step,
        [StepStatus.WAITING_APPROVAL],
        StepStatus.QUEUED,
        EventType.STEP_APPROVED,
        payload=decided,
        hold=hold,
        attempt=max(step.attempt - 1, 0),
        queued_at=timezone.now(),
        lease_expires_at=timezone.now() + DISPATCH_GRACE,
    )
    if moved:
        move_run(run, RunStatus.RUNNING, EventType.RUN_RESUMED)
        dispatch.step_on_commit(step.pk)
    return moved
