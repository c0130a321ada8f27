"""Run services: start, cancel, retry, decide approvals. The API, the admin, the command line and
schedules all come through here."""

import hashlib
import json
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from projects.services import project_require_writable
from sparkops.lib.errors import Refused
from sparkops.roles import Role
from workflows import validation
from workflows.definition import spec_of
from workflows.kinds.approval import DEFAULT_APPROVER_ROLE
from workflows.models import Workflow, WorkflowVersion
from workflows.selectors import latest_published_version

from .choices import RUN_ACTIVE, Decision, EventType, RunStatus, StepStatus, Trigger
from .engine import admission, dispatch
from .engine.core import DISPATCH_GRACE
from .engine.transitions import TransitionRefused, emit, move_run, move_step, require_run_status
from .models import Approval, Run, RunStep

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
) -> tuple[Run, bool]:
    """Validate, ask the run-level policies, and write the run and its steps at once; the engine
    picks it up after commit. Returns (run, created): a repeated idempotency key returns the first
    run. Raises PolicyRefused (429 or 422) when a rate limit or an exhausted budget refuses it."""
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
    project_require_writable(project_id=workflow.project_id)
    version = _pinned_version(workflow, version)
    inputs = {} if inputs is None else inputs
    if problems := validation.input_errors(version.input_schema, inputs):
        raise ValidationError({"inputs": problems})
    fields = {"title": title, "priority": priority, "task_agent": task_agent, "api_key": api_key}
    fields["request_fingerprint"] = fingerprint if idempotency_key else ""
    try:
        run = admission.admitted(
            workflow=workflow,
            api_key=api_key,
            create=lambda: _create(workflow, version, inputs, user, trigger, idempotency_key, **fields),
        )
    except IntegrityError:  # the same idempotency key, twice at once: the first one wins
        if (first := _replay(workflow.project_id, idempotency_key, fingerprint)) is None:
            raise
        return first, False
    return run, True


def _create(workflow, version, inputs, user, trigger, idempotency_key, **fields) -> Run:
    run = Run.objects.create(
        project_id=workflow.project_id,
        workflow=workflow,
        workflow_version=version,
        trigger=trigger,
        created_by=user,
        inputs=inputs,
        idempotency_key=idempotency_key,
        **fields,
    )
    RunStep.objects.bulk_create(_steps_for(run, version.definition))
    emit(run.pk, EventType.RUN_QUEUED, payload={"trigger": trigger, "version": version.number})
    dispatch.advance_on_commit(run.pk)
    return run


def _steps_for(run: Run, definition: dict, reuse: dict[str, RunStep] | None = None) -> list[RunStep]:
    steps = []
    for position, spec in enumerate(definition["steps"]):
        step = RunStep(
            run=run,
            key=spec["key"],
            kind=spec["kind"],
            position=position,
            max_attempts=spec.get("retry", {}).get("attempts", DEFAULT_ATTEMPTS),
        )
        previous = (reuse or {}).get(spec["key"])
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
    if not move_run(run, RunStatus.CANCELLING, EventType.RUN_CANCELLING):
        run.refresh_from_db()
        if run.status not in (RunStatus.CANCELLING, RunStatus.CANCELLED):
            raise TransitionRefused(f"Cannot cancel a run that is {run.status}.")
        return run
    dispatch.advance_now(run.pk)
    return run


def run_retry(
    *, run: Run, user: User | None = None, inputs: dict | None = None, api_key=None, idempotency_key: str = ""
) -> tuple[Run, bool]:
    """A new run of the same pinned version, reusing the outputs of the steps that succeeded.
    Admitted like any new run: rate limits and exhausted budgets apply. Returns (run, created): a
    repeated idempotency key returns the first retry, as for run_start."""
    inputs = run.inputs if inputs is None else inputs
    fingerprint = request_fingerprint(action="retry", parent=run.pk, inputs=inputs)
    if existing := _replay(run.project_id, idempotency_key, fingerprint):
        return existing, False
    require_run_status(run, {RunStatus.FAILED, RunStatus.CANCELLED}, "retry")
    project_require_writable(project_id=run.project_id)
    if problems := validation.input_errors(run.workflow_version.input_schema, inputs):
        raise ValidationError({"inputs": problems})
    # Skipped steps stay skipped: the condition that ruled them out is reused, not run again, so
    # nothing would mark its untaken branch, and the planner would start it once the condition
    # (reused, succeeded) is all it waits for.
    reusable = {step.key: step for step in run.steps.filter(status__in=[StepStatus.SUCCEEDED, StepStatus.SKIPPED])}
    key = {"idempotency_key": idempotency_key, "request_fingerprint": fingerprint if idempotency_key else ""}
    try:
        retry = admission.admitted(
            workflow=run.workflow,
            api_key=api_key,
            create=lambda: _create_retry(run, user, inputs, reusable, api_key, key),
        )
    except IntegrityError:  # the same idempotency key, twice at once: the first one wins
        if (first := _replay(run.project_id, idempotency_key, fingerprint)) is None:
            raise
        return first, False
    return retry, True


def _create_retry(run: Run, user, inputs: dict, reusable: dict[str, RunStep], api_key, key: dict) -> Run:
    retry = Run.objects.create(
        project_id=run.project_id,
        workflow_id=run.workflow_id,
        workflow_version=run.workflow_version,
        trigger=Trigger.RETRY,
        created_by=user,
        inputs=inputs,
        parent=run,
        title=run.title,
        priority=run.priority,
        task_agent=run.task_agent,
        api_key=api_key,
        **key,
    )
    RunStep.objects.bulk_create(_steps_for(retry, run.workflow_version.definition, reuse=reusable))
    emit(retry.pk, EventType.RUN_QUEUED, payload={"trigger": Trigger.RETRY, "parent": str(run.pk)})
    for step in retry.steps.filter(reused_from__isnull=False):
        emit(retry.pk, EventType.STEP_REUSED, step=step, payload={"key": step.key, "from_run": str(run.pk)})
    dispatch.advance_on_commit(retry.pk)
    return retry


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
    decided = {"decision": decision, "by": user.email, "comment": comment}
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
