"""Every status change of runs and steps goes through here: conditional UPDATEs that only move
from the statuses a transition allows, each with its event in the run's log."""

from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.db.models.sql import UpdateQuery
from django.utils import timezone

from sparkops.lib.errors import Conflict

from ..choices import RUN_TRANSITIONS, RunStatus, StepStatus
from ..models import CatalogGeneration, Run, RunEvent, RunStep
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
    return _reserve(run_id, count, totals)[0]


def reserve_and_read(
    run_id, count: int, totals: dict | None = None, *, lock_wait: str | None = None
) -> tuple[int, str, int | None]:
    """reserve_sequences, which also reads the run's status and its project's catalog generation
    as they are now that the run is locked: what an advance in the same transaction needs to know
    of the run (engine.core._succeed). Returns (last number, status, generation).

    ``lock_wait`` (PostgreSQL, e.g. "200ms"): from then on in this transaction, a statement that
    waits longer than that for a row lock fails (LockNotAvailable, see lock_wait_ran_out), set in
    the same statement. The wait for the run's own row is not bounded."""
    return _reserve(run_id, count, totals, read=True, lock_wait=lock_wait)[:3]


def lock_wait_ran_out(error: BaseException) -> bool:
    """Whether ``error`` is a statement that waited longer than reserve_and_read's ``lock_wait``."""
    return getattr(error.__cause__, "sqlstate", None) == LOCK_NOT_AVAILABLE


LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for lock_timeout (and NOWAIT)


def _reserve(run_id, count: int, totals: dict | None, *, read: bool = False, lock_wait: str | None = None) -> tuple:
    run_pk = Run._meta.pk.get_db_prep_value(run_id, connection)
    names = [name for name in TOTALS if name in (totals or {})]
    if len(names) != len(totals or {}):
        raise ValueError(f"not a run total: {sorted(set(totals) - set(TOTALS))}")
    added = "".join(f", {name} = {name} + %s" for name in names)
    returning = "event_seq"
    if read:
        generation = CatalogGeneration._meta.db_table
        returning += f", status, (SELECT number FROM {generation} WHERE project_id = runs_run.project_id)"  # noqa: S608
    bounded = lock_wait is not None and connection.vendor == "postgresql"
    if bounded:
        # SET LOCAL lock_timeout, evaluated once the run's row is locked (RETURNING): no statement more.
        returning += ", set_config('lock_timeout', %s, true)"
    sql = f"UPDATE runs_run SET event_seq = event_seq + %s{added} WHERE id = %s RETURNING {returning}"  # noqa: S608
    values = [totals[name] for name in names]
    with connection.cursor() as cursor:
        # RETURNING (PostgreSQL, SQLite >= 3.35): one statement instead of an UPDATE and a SELECT.
        cursor.execute(sql, [count, *values, run_pk, *([lock_wait] if bounded else [])])
        return cursor.fetchone()


def reserve_and_start(run_id, count: int, now) -> tuple[int, bool]:
    """reserve_sequences for a step's claim, which also starts its run if the run is still
    ``queued`` (a run queues its first steps as it is written, runs.services): in the same
    statement, one more number is taken for the ``run.started`` event. Returns the last number
    and whether the run was started here; the caller writes that event first."""
    run_pk = Run._meta.pk.get_db_prep_value(run_id, connection)
    at = connection.ops.adapt_datetimefield_value(now)
    queued, running = RunStatus.QUEUED, RunStatus.RUNNING
    # Every right-hand side reads the row as it was before this UPDATE (PostgreSQL and SQLite).
    sql = (
        "UPDATE runs_run SET event_seq = event_seq + %s + CASE WHEN status = %s THEN 1 ELSE 0 END,"
        " started_at = CASE WHEN status = %s THEN %s ELSE started_at END,"
        " updated_at = CASE WHEN status = %s THEN %s ELSE updated_at END,"
        " status = CASE WHEN status = %s THEN %s ELSE status END"
        " WHERE id = %s RETURNING event_seq, started_at = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [count, queued, queued, at, queued, at, queued, running, run_pk, at])
        last, started = cursor.fetchone()
    return last, bool(started)


def _update_taking_sequences(runs: QuerySet, count: int, values: dict) -> int | None:
    """``runs.update(**values)`` of at most one run, taking ``count`` event numbers in the same
    statement (as reserve_sequences); the last number, or None when no run matched."""
    query = runs.query.chain(UpdateQuery)
    query.add_update_values({**values, "event_seq": F("event_seq") + count})
    compiler = query.get_compiler(runs.db)
    compiler.pre_sql_setup()
    sql, params = compiler.as_sql()
    with connection.cursor() as cursor:
        cursor.execute(f"{sql} RETURNING event_seq", params)
        row = cursor.fetchone()
    return None if row is None else row[0]


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
        # The move and its event's number in one statement.
        current = Run.objects.filter(pk=run.pk, status__in=_sources(target))
        last = _update_taking_sequences(current, 1, {"status": target, "updated_at": now, **fields})
        moved = last is not None
        if moved:
            insert_events(run.pk, last, [(event, None, payload or {})])
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
