"""Advance runs, execute steps, reap what was lost.

Every function here is safe to run twice and at the same time as itself: steps are claimed with a
conditional UPDATE, runs are advanced under a row lock, and messages carry only ids.
"""

import json
import logging
import time
from datetime import timedelta
from functools import partial
from typing import Any

import structlog
from django.conf import settings
from django.db import OperationalError, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from policies import services as policy_services
from workflows import dag, templating
from workflows import selectors as workflow_selectors
from workflows.definition import spec_of
from workflows.models import WorkflowVersion

from ..choices import RUN_TERMINAL, STEP_TERMINAL, EventType, RunStatus, StepStatus
from ..models import Run, RunEvent, RunStep
from . import admission, catalog, dispatch, kinds, spans
from .context import StepCancelled, StepContext, StepFailed, StepHeld, recorded_fields
from .durability import durably
from .transitions import (
    emit_many,
    insert_events,
    lock_wait_ran_out,
    move_run,
    move_step,
    reserve_and_read,
    reserve_and_start,
    reserve_sequences,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 300
DEFAULT_BACKOFF_SECONDS = 2
MAX_BACKOFF_SECONDS = 3600
# A queued step whose message has not started it by then is dispatched again (Redis lost it).
DISPATCH_GRACE = timedelta(seconds=60)
# How long past its timeout a running step is presumed lost with its worker.
LEASE_MARGIN = timedelta(seconds=settings.SPARKOPS_LEASE_MARGIN_SECONDS)
# A step whose worker died this many times while running it is failed as poison, not run again:
# at most this many executions of a call that kills its worker (what Celery users expect).
POISON_AFTER_LOST_WORKERS = 3
# A queued run that no advance has touched for this long was committed but never enqueued.
STALE_RUN = timedelta(seconds=30)
# A running run with every step settled for this long was never advanced (its worker died between
# a step's outcome and the advance). Short: such a run is stranded for sure, the wait only spares
# an extra advance of a run whose worker is advancing it at this very moment.
STRANDED_RUN = timedelta(seconds=5)
# A task runs the single step its step's advance queued itself (no broker hop, no second task)
# while it has run for less than this: a chain of steps never outlasts the task's time limit,
# which is the longest step timeout plus this and a margin (settings.CELERY_TASK_SOFT_TIME_LIMIT).
INLINE_WITHIN_SECONDS = 30.0
# What _run returns when the step's outcome did not advance its run (the caller advances it).
UNADVANCED = object()
# What a write returns when a try whose answer was lost had committed it (_unless_landed).
LANDED = object()
# How long a step's success waits for a row lock its run's advance needs, in the same transaction,
# before it is written alone and the run advanced after (_succeed). The run's own row is not bounded.
ADVANCE_LOCK_WAIT = "200ms"


def published_version(run: Run) -> WorkflowVersion:
    """A run's version, read once per process (workflows.selectors.published_version): runs pin
    published versions, which never change."""
    return workflow_selectors.published_version(run.workflow_version_id, run.workflow_id)


def _one(queryset):
    """The row of a unique lookup, or None; without the model's ordering to compile and sort by."""
    return next(iter(queryset.order_by()[:1]), None)


# ------------------------------------------------------------------------------
# Advance
# ------------------------------------------------------------------------------
def advance(run_id, *, inline: bool = False) -> RunStep | None:
    """Bring a run up to date: skip what can no longer run, queue what is ready, finish it.
    With ``inline``, a single step queued while no other step of the run is active is not sent to
    the broker: it is returned for the caller to execute in the same task (see execute)."""
    with transaction.atomic():
        # The lock serializes advances of one run: two of them must not both queue a step. Only the
        # run's row. NO KEY: rows that point at the run (ledger entries, decisions written by its
        # steps) need not wait for the advance.
        locked = Run.objects.select_for_update(of=("self",), no_key=True).select_related("workflow")
        # The project's catalog generation comes with the row: the step this task runs next
        # reads its agent, tools, policies and prices from the process's cache (catalog.py).
        run = _one(locked.annotate(catalog_generation=catalog.generation_of()).filter(pk=run_id))
        if run is None or run.status in RUN_TERMINAL:
            return None
        run.workflow_version = published_version(run)
        return _advance_locked(run, inline=inline)


def _advance_locked(run: Run, *, inline: bool) -> RunStep | None:
    """advance, for a run its caller's transaction has locked and read (status, catalog generation,
    version): by advance itself, or by a step's outcome that advances in its own transaction."""
    # The project's concurrency limits, from the process's catalog (the generation read with the run).
    limits = catalog.of(run.project_id, run.catalog_generation).slot_policies(run.project_id)
    if run.status == RunStatus.QUEUED and not admission.may_take_slot(run, limits):
        return None  # held for a slot; advanced again when a run of its project ends
    steps = {step.key: step for step in RunStep.objects.filter(run=run).order_by()}
    following = None
    if run.status == RunStatus.CANCELLING:
        _finish_cancelling(run, steps)
    else:
        following = _plan(run, steps, inline=inline)
    if run.status in RUN_TERMINAL:
        _release_slot(run, limits)
    return following


def _release_slot(run: Run, limits: list) -> None:
    """A run ended: the runs held for a slot in its project try again, first in line first."""
    for held_id in admission.held_runs(run.project_id, policies=limits):
        dispatch.advance_on_commit(held_id)


def _plan(run: Run, steps: dict[str, RunStep], *, inline: bool = False) -> RunStep | None:
    definition = run.workflow_version.definition
    failed = next((s for s in steps.values() if s.status == StepStatus.FAILED), None)
    if failed is not None:
        _fail(run, steps, failed)
        return None
    statuses = {key: step.status for key, step in steps.items()}
    for key in dag.steps_to_skip(definition, statuses):
        if move_step(steps[key], [StepStatus.PENDING], StepStatus.SKIPPED, EventType.STEP_SKIPPED):
            statuses[key] = StepStatus.SKIPPED
    ready = dag.ready_steps(definition, statuses)
    # Run in this task only when it is the run's one active step: then, until it settles, no other
    # step of the run can start anywhere, and a stopping worker knows which step to hand back
    # (runs/shutdown.py). Were the worker to die before claiming it, the reaper dispatches it after
    # DISPATCH_GRACE, as it does a step whose message was lost.
    alone = inline and len(ready) == 1 and all(s in STEP_TERMINAL or s == StepStatus.PENDING for s in statuses.values())
    following = None
    for key in ready:
        if alone:
            if _queue_and_claim(steps[key], run):
                statuses[key] = StepStatus.RUNNING
                following = steps[key]
        elif queue_step(steps[key]):
            statuses[key] = StepStatus.QUEUED
    if following is not None:
        following.run = run  # as locked and moved by this advance: its execution reads neither again
    _settle(run, steps, statuses)
    return following


def _queue_and_claim(step: RunStep, run: Run) -> bool:
    """pending -> running for the task that advances the run, which executes the step next: the
    queue and the claim of ``queue_step`` and ``claim`` in the advance's transaction, with both of
    their events, under the run's lock the advance holds. A worker that dies before the step's
    outcome leaves it running under its lease, as one that dies during it: the reaper takes it
    over when the lease ends, a stopping worker hands it back at once (runs/shutdown.py)."""
    now = timezone.now()
    timeout = spec_of(run.workflow_version.definition, step.key).get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    fields = {
        "status": StepStatus.RUNNING,
        "attempt": step.attempt + 1,
        "queued_at": now,
        "started_at": now,
        "lease_expires_at": now + timedelta(seconds=timeout) + LEASE_MARGIN,
    }
    if not RunStep.objects.filter(pk=step.pk, status=StepStatus.PENDING, attempt=step.attempt).update(**fields):
        return False
    started = _started(step, {**fields, "lost_workers": step.lost_workers})
    emit_many(run.pk, [(EventType.STEP_QUEUED, step, {"key": step.key}), started])
    for name, value in fields.items():
        setattr(step, name, value)
    step.crashes = step.lost_workers
    return True


def _settle(run: Run, steps: dict[str, RunStep], statuses: dict[str, str]) -> None:
    values = set(statuses.values())
    event = EventType.RUN_RESUMED if run.status == RunStatus.WAITING_APPROVAL else EventType.RUN_STARTED
    if values <= {StepStatus.SUCCEEDED, StepStatus.SKIPPED}:
        outputs = {key: steps[key].output for key, status in statuses.items() if status == StepStatus.SUCCEEDED}
        if run.status != RunStatus.RUNNING:  # as read under the run's lock: no UPDATE that moves nothing
            move_run(run, RunStatus.RUNNING, event)  # a run with nothing left to do still started
        move_run(run, RunStatus.SUCCEEDED, EventType.RUN_SUCCEEDED, outputs=outputs)
    elif values & {StepStatus.QUEUED, StepStatus.RUNNING}:
        if run.status != RunStatus.RUNNING:
            move_run(run, RunStatus.RUNNING, event)
    elif StepStatus.WAITING_APPROVAL in values and run.status == RunStatus.RUNNING:
        waiting = [key for key, status in statuses.items() if status == StepStatus.WAITING_APPROVAL]
        move_run(run, RunStatus.WAITING_APPROVAL, EventType.RUN_WAITING_APPROVAL, payload={"steps": waiting})


def _fail(run: Run, steps: dict[str, RunStep], failed: RunStep) -> None:
    _cancel_unstarted(steps)
    error = {"step": failed.key, **(failed.error or {})}
    move_run(run, RunStatus.FAILED, EventType.RUN_FAILED, payload=error, error=error)


def _cancel_unstarted(steps: dict[str, RunStep]) -> None:
    for step in steps.values():
        sources = [StepStatus.PENDING, StepStatus.QUEUED, StepStatus.WAITING_APPROVAL]
        move_step(step, sources, StepStatus.CANCELLED, EventType.STEP_CANCELLED)


def _finish_cancelling(run: Run, steps: dict[str, RunStep]) -> None:
    _cancel_unstarted(steps)
    # Running steps stop at their next check and advance the run again.
    if not any(step.status == StepStatus.RUNNING for step in steps.values()):
        move_run(run, RunStatus.CANCELLED, EventType.RUN_CANCELLED)


def ready_at_creation(definition: dict) -> list[str]:
    """Keys of the steps a new run can queue as it is written: those its first advance would queue
    (nothing has run, so nothing is skipped yet)."""
    return dag.ready_steps(definition, {})


def mark_queued(steps: list[RunStep]) -> None:
    """Steps not yet written, as queue_step leaves them: the caller writes them, with their
    ``step.queued`` events, and sends them on commit (runs.services)."""
    fields = _queued_fields()
    for step in steps:
        step.status = StepStatus.QUEUED
        for name, value in fields.items():
            setattr(step, name, value)


def _queued_fields() -> dict:
    """A queued step's time of queueing, and its dispatch lease: the reaper sends it again if no
    worker has claimed it by then."""
    now = timezone.now()
    return {"queued_at": now, "lease_expires_at": now + DISPATCH_GRACE}


def queue_step(step: RunStep) -> bool:
    """pending -> queued, dispatched when the transaction commits."""
    moved = move_step(step, [StepStatus.PENDING], StepStatus.QUEUED, EventType.STEP_QUEUED, **_queued_fields())
    if moved:
        dispatch.step_on_commit(step.pk)
    return moved


# ------------------------------------------------------------------------------
# Execute
# ------------------------------------------------------------------------------
def claim(step_id: int) -> RunStep | None:
    """queued -> running, or take over a running step whose lease expired (its worker died).
    The UPDATE's row count decides: a second delivery of the same message claims nothing. The
    attempt's start is written with the claim, so an attempt that kills its worker still shows."""
    now = timezone.now()
    step = _with_run(RunStep.objects.filter(pk=step_id))
    if step is None or step.status not in (StepStatus.QUEUED, StepStatus.RUNNING):
        return None
    taken_over = step.status == StepStatus.RUNNING  # its worker died, or froze past its lease
    timeout = spec_of(step.run.workflow_version.definition, step.key).get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    fields = {
        "status": StepStatus.RUNNING,
        "attempt": step.attempt + 1,
        "lost_workers": step.lost_workers + taken_over,
        "started_at": now,
        "lease_expires_at": now + timedelta(seconds=timeout) + LEASE_MARGIN,
    }
    # The status read above is part of the condition, so lost_workers counts takeovers only.
    claimable = (
        Q(status=StepStatus.QUEUED) if not taken_over else Q(status=StepStatus.RUNNING, lease_expires_at__lt=now)
    )
    step.crashes = fields["lost_workers"]
    if step.crashes >= POISON_AFTER_LOST_WORKERS:
        step.crashes -= _handed_back(step)  # a worker stopped for a deploy did not crash
    events = [] if step.crashes >= POISON_AFTER_LOST_WORKERS else [_started(step, fields)]
    with transaction.atomic():
        # The run's row first (the event's number), then the step's: the order advance locks them
        # in, so a claim never deadlocks with an advance that cancels this queued step.
        # A run that queued its first steps as it was written starts with its first claim.
        last, started = reserve_and_start(step.run_id, len(events), now)
        if not RunStep.objects.filter(claimable, pk=step_id, attempt=step.attempt).update(**fields):
            transaction.set_rollback(True)
            return None
        if started:
            events.insert(0, (EventType.RUN_STARTED, None, {}))
        insert_events(step.run_id, last, events)
    if started:
        step.run.status, step.run.started_at, step.run.updated_at = RunStatus.RUNNING, now, now
    for name, value in fields.items():
        setattr(step, name, value)
    return step


def _with_run(steps) -> RunStep | None:
    """The step ``steps`` selects, with its run, the run's workflow and version, and the project's
    catalog generation, in one statement."""
    generation = catalog.generation_of("run__project_id")
    step = _one(steps.select_related("run__workflow").annotate(catalog_generation=generation))
    if step is not None:
        step.run.catalog_generation = step.catalog_generation
        step.run.workflow_version = published_version(step.run)
    return step


def _handed_back(step: RunStep) -> int:
    """Takeovers of steps a stopping worker handed back (runs/shutdown.py): not crashes."""
    return RunEvent.objects.filter(run_id=step.run_id, step=step, type=EventType.STEP_HANDED_BACK).count()


def _started(step: RunStep, fields: dict) -> tuple:
    payload = {"key": step.key, "attempt": fields["attempt"]}
    if fields["lost_workers"] > step.lost_workers:
        payload["lost_workers"] = fields["lost_workers"]  # taken over from a worker that died
    return (EventType.STEP_STARTED, step, payload)


def execute(step_id: int) -> None:
    """Run the step, then the single step its advance queues after it, and so on (inline): a linear
    chain costs one task, not one per step and advance."""
    started = time.monotonic()
    following = _execute_one(step_id, inline=True)
    while following is not None:
        inline = time.monotonic() - started < INLINE_WITHIN_SECONDS
        following = _execute_one(following.pk, claimed=following, inline=inline)


def _execute_one(step_id: int, *, claimed: RunStep | None = None, inline: bool) -> RunStep | None:
    """Claim the step (unless the advance before claimed it for this task), run it, advance its run."""
    step = claimed or claim(step_id)
    if step is None:
        _advance_if_settled(step_id)
        return None
    run = step.run
    # On every log line of the rest of this task (django-structlog clears them before the next).
    structlog.contextvars.bind_contextvars(run_id=str(step.run_id), step=step.key)
    if step.crashes >= POISON_AFTER_LOST_WORKERS:
        message = f"Its worker died {step.crashes} times while running it; it is not run again."
        _fail_step(step, StepFailed(message, permanent=True, kind="Poison"))
    elif run.status in (RunStatus.CANCELLING, *RUN_TERMINAL):
        _write_outcome(step, None, "cancelled", _cancelling(step))
    else:
        with spans.step_span(step):
            advanced = _run(step, run, inline=inline)
        if advanced is not UNADVANCED:
            return advanced  # a success advanced the run in its own transaction (_succeed)
    # Advance here rather than through another message: the step's outcome is committed, and
    # the run's row lock keeps this safe next to any other advance. A worker that dies before
    # this leaves a run whose steps all settled: the reaper advances it (stranded_runs). A retry of
    # an advance whose commit went through before its connection dropped queues nothing more: the
    # step it queued for this task waits for the reaper instead (DISPATCH_GRACE).
    return durably(partial(advance, run.pk, inline=inline))


def _advance_if_settled(step_id: int) -> None:
    """A delivery that claimed nothing may be the redelivery of a message whose worker died after
    writing the step's outcome but before advancing the run: advance it now."""
    settled = RunStep.objects.filter(
        pk=step_id,
        status__in=[*STEP_TERMINAL, StepStatus.WAITING_APPROVAL],
        run__status__in=[RunStatus.RUNNING, RunStatus.WAITING_APPROVAL],
    )
    run_id = settled.values_list("run_id", flat=True).first()
    if run_id is not None:
        advance(run_id)


def _cancelling(step: RunStep):
    return partial(
        move_step,
        step,
        [StepStatus.RUNNING],
        StepStatus.CANCELLED,
        EventType.STEP_CANCELLED,
        if_attempt=step.attempt,
        **recorded_fields(step),
    )


def _run(step: RunStep, run: Run, *, inline: bool = False):
    """Run the step and write its outcome. A success advances the run in the same transaction
    and returns what advance returns; any other outcome returns UNADVANCED."""
    spec = spec_of(run.workflow_version.definition, step.key)
    outputs = _outputs_for(run, spec)
    timeout = spec.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    # Counted from the claim, like the lease, so the lease always outlasts the step's last call.
    elapsed = (timezone.now() - step.started_at).total_seconds()
    ctx = StepContext(
        run=run,
        step=step,
        spec=spec,
        outputs=outputs,
        deadline=time.monotonic() + timeout - elapsed,
        catalog=catalog.of(run.project_id, getattr(run, "catalog_generation", None)),
    )
    try:
        kind = kinds.get(step.kind)
        if kind.parks:
            _park(step, ctx, kind.run(ctx))
            return UNADVANCED
        output = kind.run(ctx)
    except StepCancelled:
        _write_outcome(step, ctx, "cancelled", _cancelling(step))
    except StepHeld as held:
        _hold(step, ctx, held.as_hold(step.hold or {}))
    except StepFailed as failure:
        _fail_step(step, failure, spec, ctx)
    else:
        return _succeed(step, output, ctx, inline=inline)
    return UNADVANCED


def _park(step: RunStep, ctx: StepContext, payload: dict) -> None:
    """A parking kind's step (an approval gate) waits for a person's decision, which settles it."""
    _wait_for_decision(step, ctx, payload)


def _hold(step: RunStep, ctx: StepContext, hold: dict) -> None:
    """A policy held a call: the step waits for approval, keeping what the attempt learned."""
    _wait_for_decision(step, ctx, hold, hold=hold, **recorded_fields(step))


def _wait_for_decision(step: RunStep, ctx: StepContext, payload: dict, **fields) -> None:
    move = partial(
        move_step,
        step,
        [StepStatus.RUNNING],
        StepStatus.WAITING_APPROVAL,
        EventType.STEP_WAITING_APPROVAL,
        payload=payload,
        if_attempt=step.attempt,
        lease_expires_at=None,
        **fields,
    )
    _write_outcome(step, ctx, "waiting_approval", move)


def _outputs_for(run: Run, spec: dict) -> dict[str, Any]:
    """Earlier steps' outputs, read only when the step's templates can refer to them."""
    if templating.STEPS not in json.dumps(spec):
        return {}
    return dict(RunStep.objects.filter(run=run, status=StepStatus.SUCCEEDED).values_list("key", "output"))


def _refused(step: RunStep, outcome: str) -> tuple:
    """A late outcome from a worker whose lease was taken over (or whose step was settled by
    someone else): not applied, but kept in the log so it shows what really ran."""
    return (EventType.STEP_OUTCOME_REFUSED, step, {"key": step.key, "attempt": step.attempt, "outcome": outcome})


def _write_outcome(step: RunStep, ctx: StepContext | None, outcome: str, move) -> bool:
    """The attempt's held-back records, then its outcome (``move()``, conditional on the attempt),
    in one transaction, written through a dropped connection: the result is in hand."""

    def write() -> bool:
        with transaction.atomic():
            reserve_sequences(step.run_id, 0)  # the run's row before the step's, as claim and advance
            if ctx is not None:
                ctx.write()  # the final call's tokens count even when another worker took over
            moved = move()
            if not moved:
                emit_many(step.run_id, [_refused(step, outcome)])
        return moved

    moved = durably(_unless_landed(step, write, landed=True), until=step.lease_expires_at)
    if ctx is not None:
        ctx.forget()
    return moved


def _unless_landed(step: RunStep, write, *, landed: Any = None):
    """``write`` for durably(), which on a retry first checks whether the previous try committed
    after all (the connection dropped after COMMIT reached the server, before its answer came back):
    then the step has left ``running`` at this attempt, and writing again would count the
    attempt's tokens, cost and ledger entries twice. Only this attempt's own outcome moves it so."""
    tries = 0

    def once():
        nonlocal tries
        tries += 1
        if (
            tries > 1
            and RunStep.objects.filter(pk=step.pk, attempt=step.attempt).exclude(status=StepStatus.RUNNING).exists()
        ):
            return landed
        return write()

    return once


def _succeed(step: RunStep, output: Any, ctx: StepContext, *, inline: bool = False):
    try:
        return _write_success(step, output, ctx, inline=inline)
    except StepCancelled:
        # The run is being cancelled: the step's calls are counted, its output is not used. Read
        # under the run's lock as the success was to be written, not by a statement before it.
        _write_outcome(step, ctx, "cancelled", _cancelling(step))
        return UNADVANCED


def _write_success(step: RunStep, output: Any, ctx: StepContext, *, inline: bool):
    """Write the success and advance the run in the same transaction (one commit, and the run is
    not locked and read twice); returns what advance returns, or UNADVANCED when it did not advance
    (the caller advances as after any outcome).

    The provider has answered: its answer is not held hostage to the advance. Should the advance
    wait for a row lock longer than ADVANCE_LOCK_WAIT (PostgreSQL), the transaction is given up
    and the success is written alone; a worker killed while the advance waits then loses nothing
    of the call, which is never made again. A run found ``cancelling`` once locked here cancels the
    step instead: its calls count, its output is not used (the check before the write, folded in)."""
    run = step.run
    since = timezone.now()

    def write(*, advancing: bool):
        later = []  # the budget totals the settled call moves: last, for their locks are shared
        with transaction.atomic():
            outcome = written(advancing, later)
            for move in later:
                move()
        return outcome

    def written(advancing: bool, later: list):
        last = _lock_run_for_success(step, ctx, advancing=advancing)
        # Conditional on this attempt: a worker that lost its lease must not overwrite the result
        # of the worker that took over (its tokens still count: ctx.write adds them then).
        done = RunStep.objects.filter(pk=step.pk, status=StepStatus.RUNNING, attempt=step.attempt).update(
            status=StepStatus.SUCCEEDED,
            output=output,
            error={},
            finished_at=timezone.now(),
            lease_expires_at=None,
            **recorded_fields(step),
            **ctx.step_increments(),
        )
        succeeded = (EventType.STEP_SUCCEEDED, step, {"key": step.key, "attempt": step.attempt})
        ctx.write(succeeded if done else _refused(step, "succeeded"), last=last, step_counted=bool(done), later=later)
        if not done:
            return UNADVANCED
        _skip_untaken(step, ctx.untaken)
        if not advancing:
            return UNADVANCED
        return None if run.status in RUN_TERMINAL else _advance_locked(run, inline=inline)

    def write_and_advance():
        try:
            return write(advancing=True)
        except OperationalError as error:
            if not lock_wait_ran_out(error):
                raise
        log.info(
            "the advance after step %s waited over %s for a lock; its success is written alone",
            step.pk,
            ADVANCE_LOCK_WAIT,
        )
        return write(advancing=False)

    advanced = durably(_unless_landed(step, write_and_advance, landed=LANDED), until=step.lease_expires_at)
    ctx.forget()
    if advanced is LANDED:
        # The try whose answer was lost committed: with the advance, which may have claimed a step
        # for this task (still this task's to run), or without it (the caller advances; advancing
        # a run that was advanced already queues nothing more).
        return _claimed_inline(step, since) or UNADVANCED
    return advanced


def _lock_run_for_success(step: RunStep, ctx: StepContext, *, advancing: bool) -> int:
    """The run's row before the step's, the order claim and advance lock them in: a takeover claim
    racing the success waits for it instead of deadlocking with it. The numbers of the events it
    writes (the held-back ones and the outcome) are taken with the lock, and the run's status and
    catalog generation are read under it, for the advance; the final call's tokens and cost are
    added to the run's in the same statement. Returns the last number; a run being cancelled
    raises StepCancelled, and nothing of the transaction is kept."""
    run = step.run
    last, run.status, run.catalog_generation = reserve_and_read(
        step.run_id, ctx.events_due(1), ctx.totals, lock_wait=ADVANCE_LOCK_WAIT if advancing else None
    )
    if run.status == RunStatus.CANCELLING:
        raise StepCancelled()
    return last


def _claimed_inline(step: RunStep, since) -> RunStep | None:
    """The step an advance claimed for this task after ``step`` (_queue_and_claim) since ``since``:
    running, queued and started at the same instant (a claim by a worker comes later than its
    queueing), read as claim reads it."""
    claimed = RunStep.objects.filter(
        run_id=step.run_id, status=StepStatus.RUNNING, started_at__gte=since, queued_at=F("started_at")
    ).exclude(pk=step.pk)
    following = _with_run(claimed)
    if following is not None:
        following.crashes = following.lost_workers
    return following


def _skip_untaken(step: RunStep, keys: list[str]) -> None:
    if not keys:  # most steps are no condition: not even the building of a query that reads nothing
        return
    for other in RunStep.objects.filter(run_id=step.run_id, key__in=keys, status=StepStatus.PENDING):
        move_step(other, [StepStatus.PENDING], StepStatus.SKIPPED, EventType.STEP_SKIPPED, payload={"by": step.key})


def _fail_step(step: RunStep, failure: StepFailed, spec: dict | None = None, ctx: StepContext | None = None) -> None:
    retry = (spec or {}).get("retry", {})
    # Executions whose worker died are not failures of the step: they do not use up its retries.
    failures = step.attempt - step.lost_workers
    if not failure.permanent and failures < step.max_attempts:
        delay = failure.retry_after
        if delay is None:
            delay = retry.get("backoff_seconds", DEFAULT_BACKOFF_SECONDS) * 2 ** (failures - 1)
        delay = min(delay, MAX_BACKOFF_SECONDS)
        move = partial(
            move_step,
            step,
            [StepStatus.RUNNING],
            StepStatus.QUEUED,
            EventType.STEP_RETRYING,
            payload={**failure.as_error(), "attempt": step.attempt, "delay_seconds": delay},
            if_attempt=step.attempt,
            error=failure.as_error(),
            queued_at=timezone.now(),
            lease_expires_at=timezone.now() + timedelta(seconds=delay) + DISPATCH_GRACE,
            **recorded_fields(step),
        )
        if _write_outcome(step, ctx, "retrying", move):
            dispatch.step_on_commit(step.pk, delay=delay)
        return
    move = partial(
        move_step,
        step,
        [StepStatus.RUNNING],
        StepStatus.FAILED,
        EventType.STEP_FAILED,
        payload=failure.as_error(),
        if_attempt=step.attempt,
        error=failure.as_error(),
        **recorded_fields(step),
    )
    _write_outcome(step, ctx, "failed", move)


# ------------------------------------------------------------------------------
# Reap
# ------------------------------------------------------------------------------
def reap() -> dict[str, int]:
    """Re-dispatch what a dead worker or a lost message left behind. Safe to run anywhere, any
    number of times: the claim decides who executes."""
    now = timezone.now()
    lost_steps = RunStep.objects.filter(
        Q(status=StepStatus.QUEUED) | Q(status=StepStatus.RUNNING), lease_expires_at__lt=now
    ).values_list("pk", "status")[:500]
    counts = {"steps": 0, "runs": 0}
    for step_id, status in lost_steps:
        if status == StepStatus.QUEUED:
            RunStep.objects.filter(pk=step_id, status=StepStatus.QUEUED).update(lease_expires_at=now + DISPATCH_GRACE)
        dispatch.step_now(step_id)
        counts["steps"] += 1
    # A queued run whose first steps were queued as it was written waits for their claim, not for
    # an advance: those steps' leases cover it (above).
    busy = RunStep.objects.filter(run=OuterRef("pk"), status__in=[StepStatus.QUEUED, StepStatus.RUNNING])
    stale = Run.objects.alias(has_busy=Exists(busy)).filter(
        Q(status=RunStatus.CANCELLING) | Q(status=RunStatus.QUEUED, has_busy=False), updated_at__lt=now - STALE_RUN
    )
    for run_id in stale.values_list("pk", flat=True)[:500]:
        Run.objects.filter(pk=run_id).update(updated_at=now)  # one nudge per interval, not a storm
        dispatch.advance_now(run_id)
        counts["runs"] += 1
    counts["runs"] += _advance_stranded(now)
    counts["reservations"] = _expire_reservations(now)
    if any(counts.values()):
        log.warning(
            "reaper re-dispatched %(steps)s step(s) and %(runs)s run(s), expired %(reservations)s reservation(s)",
            counts,
        )
    return counts


def stranded_runs(now):
    """Runs whose steps have all settled but that did not move: their step's worker died between
    writing the outcome and advancing the run. A running run with no queued or running step, or a
    run waiting for approval with no step waiting either, is always due an advance."""
    busy = RunStep.objects.filter(run=OuterRef("pk"), status__in=[StepStatus.QUEUED, StepStatus.RUNNING])
    waiting = RunStep.objects.filter(run=OuterRef("pk"), status=StepStatus.WAITING_APPROVAL)
    return Run.objects.alias(has_busy=Exists(busy), has_waiting=Exists(waiting)).filter(
        Q(status=RunStatus.RUNNING) | Q(status=RunStatus.WAITING_APPROVAL, has_waiting=False),
        has_busy=False,
        updated_at__lt=now - STRANDED_RUN,
    )


def _advance_stranded(now) -> int:
    count = 0
    for run_id in stranded_runs(now).values_list("pk", flat=True)[:500]:
        Run.objects.filter(pk=run_id).update(updated_at=now)  # one nudge per interval, not a storm
        dispatch.advance_now(run_id)
        count += 1
    return count


def _expire_reservations(now) -> int:
    """Reservations whose attempt is no longer running (its worker died between reserving and
    settling) expire; the ledger is policies' to write."""
    return policy_services.reservations_expire(stale_before=now - STALE_RUN, running=StepStatus.RUNNING)
