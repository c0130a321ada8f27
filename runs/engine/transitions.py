"""Every status change of runs and steps goes through here: conditional UPDATEs that only move
from the statuses a transition allows, each with its event in the run's log."""

from django.db import connection, transaction
from django.utils import timezone

from sparkops.lib.errors import Conflict

from ..choices import RUN_TRANSITIONS, RunStatus, StepStatus
from ..models import Run, RunEvent, RunStep
from ..signals import events_written


class TransitionRefused(Conflict):
    """The object is not in a status this change may start from (API: 409)."""


# The run's counters a step's calls add to (StepContext.totals), which reserve_sequences can add
# in the same statement.
TOTALS = ("input_tokens", "output_tokens", "cost_usd", "unpriced_calls")


def reserve_sequences(run_id, count: int, totals: dict | None = None) -> int:
    """Take the next ``count`` event numbers of a run; returns the last. The UPDATE locks the run
    row until commit, so concurrent writers get distinct, gapless numbers in commit order. Call it
    first to lock the run's row before a step's: the order advance takes them in. ``totals``
    (tokens and cost of calls, by field of TOTALS) are added to the run's in the same statement."""
    run_pk = Run._meta.pk.get_db_prep_value(run_id, connection)
    names = [name for name in TOTALS if name in (totals or {})]
    if len(names) != len(totals or {}):
        raise ValueError(f"not a run total: {sorted(set(totals) - set(TOTALS))}")
    added = "".join(f", {name} = {name} + %s" for name in names)
    sql = f"UPDATE runs_run SET event_seq = event_seq + %s{added} WHERE id = %s RETURNING event_seq"  # noqa: S608
    values = [totals[name] for name in names]
    with connection.cursor() as cursor:
        # RETURNING (PostgreSQL, SQLite >= 3.35): one statement instead of an UPDATE and a SELECT.
        cursor.execute(sql, [count, *values, run_pk])
        return cursor.fetchone()[0]


def emit_many(run_id, events: list[tuple[str, RunStep | None, dict]]) -> list[RunEvent]:
    """Append events (type, step, payload) in order, with the run's next sequence numbers."""
    if not events:
        return []
    with transaction.atomic(savepoint=False):  # no savepoint when nested: nothing here is caught
        return insert_events(run_id, reserve_sequences(run_id, len(events)), events)


def insert_events(run_id, last: int, events: list[tuple[str, RunStep | None, dict]]) -> list[RunEvent]:
    """Write events numbered up to ``last`` (reserved by the caller)."""
    first = last - len(events) + 1
    rows = [
        RunEvent(run_id=run_id, step=step, sequence=first + n, type=type_, payload=payload or {})
        for n, (type_, step, payload) in enumerate(events)
    ]
    written = RunEvent.objects.bulk_create(rows)
    events_written.send(sender=RunEvent, run_id=run_id, events=written)
    return written


def emit(run_id, type_: str, *, step: RunStep | None = None, payload: dict | None = None) -> RunEvent:
    """Append one event with the run's next sequence number."""
    return emit_many(run_id, [(type_, step, payload or {})])[0]


def _sources(target: str) -> list[str]:
    return [source for source, targets in RUN_TRANSITIONS.items() if target in targets]


def move_run(run: Run, target: str, event: str, *, payload: dict | None = None, **fields) -> bool:
    """Move the run to ``target`` if its stored status allows it; False if it did not."""
    now = timezone.now()
    if target == RunStatus.RUNNING:
        fields.setdefault("started_at", run.started_at or now)
    if target in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED):
        fields.setdefault("finished_at", now)
    with transaction.atomic(savepoint=False):  # no savepoint when nested: nothing here is caught
        moved = Run.objects.filter(pk=run.pk, status__in=_sources(target)).update(
            status=target, updated_at=now, **fields
        )
        if moved:
            emit(run.pk, event, payload=payload)
    if moved:
        run.status = target
        for name, value in fields.items():
            setattr(run, name, value)
    return bool(moved)


def move_step(
    step: RunStep,
    sources: list[str],
    target: str,
    event: str | None,
    *,
    payload: dict | None = None,
    if_attempt: int | None = None,
    **fields,
) -> bool:
    """Move the step to ``target`` if it is in one of ``sources`` (and, with ``if_attempt``, still at
    that attempt: a worker that lost its lease must not move a step another worker now runs);
    False if it was not."""
    now = timezone.now()
    if target in (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED):
        fields.setdefault("finished_at", now)
        fields.setdefault("lease_expires_at", None)
    current = RunStep.objects.filter(pk=step.pk, status__in=sources)
    if if_attempt is not None:
        current = current.filter(attempt=if_attempt)
    with transaction.atomic(savepoint=False):  # no savepoint when nested: nothing here is caught
        moved = current.update(status=target, **fields)
        if moved and event:
            emit(step.run_id, event, step=step, payload={"key": step.key, **(payload or {})})
    if moved:
        step.status = target
        for name, value in fields.items():
            setattr(step, name, value)
    return bool(moved)


def require_run_status(run: Run, allowed, action: str) -> None:
    if run.status not in allowed:
        raise TransitionRefused(f"Cannot {action} a run that is {run.status}.")
