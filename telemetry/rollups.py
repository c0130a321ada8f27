"""Hourly roll-ups of runs: kept by a beat tick (``telemetry.roll_up``) and the ``rollup_runs``
command, read by ``GET /api/v1/metrics`` and the dashboard's charts (telemetry/metrics.py,
telemetry/dashboard.py).

An hour is rolled once it has been over for SEAL_DELAY (a run's ``queued_at`` is stamped before
its row commits). Its rows count its finished runs; the runs still active then are *pending*:
readers read them live, and a later tick adds each to its hour's row once it has finished. A
finished run never changes status again, so a counted run stays right. A window is then read as
rows for its rolled hours + the pending runs of those hours + every run outside them (the open
hour, the hours since the last tick, the part of an hour the window starts in), live: exact to
the second, and the same answer before and after a tick.

Ticks are idempotent: each rolls again from scratch the last RECENT_HOURS hours and any new ones
(delete and insert, one transaction, under the state row's lock), and counts the pending runs that
finished. Retention may later prune the runs of a rolled hour; its rows stay (a tick never rolls
an hour again once it is older than RECENT_HOURS), so metrics of old windows come from them.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import (
    Case,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    IntegerField,
    Q,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Cast, Floor, Ln, Trunc
from django.db.models.lookups import GreaterThanOrEqual, LessThan
from django.utils import timezone

from runs.choices import RUN_TERMINAL
from runs.models import Run, RunStep

from . import histogram
from .models import RollupPending, RollupState, RunHourlyRollup

HOUR = timedelta(hours=1)
#: An hour is rolled this long after it ends: a run queued at 10:59:59.9 may commit a little later.
SEAL_DELAY = timedelta(minutes=2)
#: Every tick rolls this many sealed hours again from scratch (late commits, a lost tick).
RECENT_HOURS = 3
TERMINAL = [str(status) for status in RUN_TERMINAL]


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    floor = hour_of(moment)
    return floor if floor == moment else floor + HOUR


def hours_between(start: datetime, end: datetime) -> list[datetime]:
    return [start + HOUR * i for i in range(max(0, int((end - start) / HOUR)))]


def _ranges(hours: Iterable[datetime]) -> list[tuple[datetime, datetime]]:
    """Contiguous [start, end) ranges covering ``hours``."""
    ranges: list[list[datetime]] = []
    for hour in sorted(set(hours)):
        if ranges and ranges[-1][1] == hour:
            ranges[-1][1] = hour + HOUR
        else:
            ranges.append([hour, hour + HOUR])
    return [(start, end) for start, end in ranges]


def _queued_in(ranges: Iterable[tuple[datetime, datetime]], prefix: str = "") -> Q:
    q = Q(pk__in=[])
    for start, end in ranges:
        q |= Q(**{f"{prefix}queued_at__gte": start, f"{prefix}queued_at__lt": end})
    return q


# ------------------------------------------------------------------------------
# Rolling
# ------------------------------------------------------------------------------
@dataclass
class Cell:
    """Runs of one key (an hour and status, or a rollup row's dimensions) with their durations."""

    runs: int = 0
    cost_usd: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0
    run_durations: dict = field(default_factory=dict)
    step_durations: dict = field(default_factory=dict)


class Milliseconds(Func):
    """``finished - started`` in milliseconds, a float, computed by the database."""

    output_field = FloatField()

    def __init__(self, started: str, finished: str):
        super().__init__(ExpressionWrapper(F(finished) - F(started), output_field=DurationField()))

    def as_postgresql(self, compiler, connection, **extra):
        template = "CAST(EXTRACT(EPOCH FROM %(expressions)s) * 1000 AS double precision)"
        return self.as_sql(compiler, connection, template=template, **extra)

    def as_sqlite(self, compiler, connection, **extra):  # Django's timestamp difference is in µs
        return self.as_sql(compiler, connection, template="(%(expressions)s / 1000.0)", **extra)


def _bucket(prefix: str = "") -> Case:
    """The histogram bucket of a row's duration (telemetry/histogram.py), in SQL: rows are grouped
    by it, so a million durations come back as a few hundred counts. Null without a duration."""
    ms = Milliseconds(f"{prefix}started_at", f"{prefix}finished_at")
    return Case(
        When(GreaterThanOrEqual(ms, 1), then=Cast(Floor(Ln(ms) / Value(histogram.LOG_BASE)), IntegerField()) + 1),
        When(LessThan(ms, 1), then=Value(0)),
        default=None,
        output_field=IntegerField(),
    )


def _hour(field: str) -> Trunc:
    return Trunc(field, "hour", tzinfo=UTC)


def _grouped_runs(where: Q, *keys: str, sums: bool = False):
    """Runs of ``where`` counted by ``keys``, the hour they were queued in and their duration's bucket."""
    extra = {"usd": Sum("cost_usd"), "input": Sum("input_tokens"), "output": Sum("output_tokens")} if sums else {}
    runs = Run.objects.filter(where).order_by().annotate(hour=_hour("queued_at"), bucket=_bucket())
    return runs.values(*keys, "hour", "bucket").annotate(n=Count("pk"), **extra)


def _grouped_steps(where: Q, **keys: str):
    """Timed steps of the runs ``where`` (a filter on runs, from the steps), counted likewise."""
    steps = RunStep.objects.filter(where, started_at__isnull=False, finished_at__isnull=False).order_by()
    steps = steps.annotate(hour=_hour("run__queued_at"), bucket=_bucket(), **{k: F(v) for k, v in keys.items()})
    return steps.values(*keys, "hour", "bucket").annotate(n=Count("pk"))


def _add(cell: Cell, row: dict, durations: str) -> None:
    if row["bucket"] is not None:
        histogram.add_bucket(getattr(cell, durations), row["bucket"], row["n"])


ROW_KEYS = {"run_project": "run__project_id", "run_workflow": "run__workflow_id", "run_status": "run__status"}


def _rollup_cells(runs: Q) -> dict[tuple, Cell]:
    """The rows' figures of the runs ``runs``: {(project, hour, workflow, status): Cell}."""
    cells: dict[tuple, Cell] = defaultdict(Cell)
    for row in _grouped_runs(runs, "project_id", "workflow_id", "status", sums=True):
        cell = cells[(row["project_id"], row["hour"], row["workflow_id"], row["status"])]
        cell.runs += row["n"]
        cell.cost_usd += row["usd"] or 0
        cell.input_tokens += row["input"] or 0
        cell.output_tokens += row["output"] or 0
        _add(cell, row, "run_durations")
    for row in _grouped_steps(_prefixed(runs, "run__"), **ROW_KEYS):
        _add(cells[(row["run_project"], row["hour"], row["run_workflow"], row["run_status"])], row, "step_durations")
    return cells


def _roll_hours(hours: list[datetime]) -> int:
    """Rolls ``hours`` again from scratch: their rows and pending runs are replaced."""
    if not hours:
        return 0
    ranges = _ranges(hours)
    in_hours = Q(pk__in=[])
    for start, end in ranges:
        in_hours |= Q(hour__gte=start, hour__lt=end)
    RunHourlyRollup.objects.filter(in_hours).delete()
    RollupPending.objects.filter(in_hours).delete()
    active = Run.objects.filter(_queued_in(ranges)).exclude(status__in=TERMINAL).order_by()
    RollupPending.objects.bulk_create(
        (RollupPending(run_id=pk, hour=hour_of(queued_at)) for pk, queued_at in active.values_list("pk", "queued_at")),
        batch_size=1000,
    )
    cells = _rollup_cells(_queued_in(ranges) & Q(status__in=TERMINAL))
    RunHourlyRollup.objects.bulk_create(
        (
            RunHourlyRollup(project_id=p, hour=h, workflow_id=w, status=s, **vars(cell))
            for (p, h, w, s), cell in cells.items()
        ),
        batch_size=500,
    )
    return sum(cell.runs for cell in cells.values())


def _count_finished_pending(skip: list[tuple[datetime, datetime]]) -> int:
    """Adds the pending runs that have finished since (outside the hours rolled afresh) to their
    hours' rows, and forgets them."""
    pending = RollupPending.objects.all()
    for start, end in skip:
        pending = pending.exclude(hour__gte=start, hour__lt=end)
    finished = list(
        Run.objects.filter(pk__in=pending.values("run_id"), status__in=TERMINAL).values_list("pk", flat=True)
    )
    if not finished:
        return 0
    cells = _rollup_cells(Q(pk__in=finished))
    for (project_id, hour, workflow_id, status), cell in cells.items():
        row, _ = RunHourlyRollup.objects.get_or_create(
            project_id=project_id, hour=hour, workflow_id=workflow_id, status=status
        )
        row.runs += cell.runs
        row.cost_usd += cell.cost_usd
        row.input_tokens += cell.input_tokens
        row.output_tokens += cell.output_tokens
        histogram.merge(row.run_durations, cell.run_durations)
        histogram.merge(row.step_durations, cell.step_durations)
        row.save()
    RollupPending.objects.filter(run_id__in=finished).delete()
    return len(finished)


@dataclass(frozen=True)
class Rolled:
    hours: int
    runs: int
    pending_counted: int
    state: RollupState


def roll(*, now: datetime | None = None, back_to: datetime | None = None) -> Rolled:
    """One tick: roll the hours sealed since the last one and the last RECENT_HOURS again, count
    the pending runs that finished; with ``back_to``, also the hours from it to the first rolled
    one (a backfill). The first tick ever starts SPARKOPS_ROLLUP_FIRST_DAYS back."""
    now = now or timezone.now()
    until = hour_of(now - SEAL_DELAY)
    with transaction.atomic():
        state = RollupState.objects.select_for_update().filter(pk=1).first()
        if state is None:
            start = hour_of(now - timedelta(days=settings.SPARKOPS_ROLLUP_FIRST_DAYS))
            state = RollupState(rolled_from=start, rolled_until=start, rolled_at=now)
        hours = set(hours_between(max(state.rolled_from, min(state.rolled_until, until) - HOUR * RECENT_HOURS), until))
        hours |= set(hours_between(state.rolled_until, until))
        if back_to is not None and hour_of(back_to) < state.rolled_from:
            hours |= set(hours_between(hour_of(back_to), state.rolled_from))
            state.rolled_from = hour_of(back_to)
        hours = sorted(hours)
        runs = _roll_hours(hours)
        counted = _count_finished_pending(_ranges(hours))
        state.rolled_until = max(state.rolled_until, until)
        state.rolled_at = now
        state.save()
    return Rolled(len(hours), runs, counted, state)


# ------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------
def window(project_ids: list, since: datetime, now: datetime, *, steps: bool = True) -> dict[tuple, Cell]:
    """The runs of these projects queued in [since, now), as {(UTC hour, status): Cell}: rows for
    the rolled hours, and live reads of their pending runs and of every run outside them. Five
    queries (four without ``steps``).

    On PostgreSQL they share one REPEATABLE READ snapshot, so a tick committing meanwhile cannot
    make a run count twice or not at all. Not on SQLite: there a transaction is IMMEDIATE and would
    take the write lock for a read (settings), so for one answer in a tick's instant a run moving
    from pending to its row may count twice or not at all; the next answer is right."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:  # else the caller's snapshot
        return _window(project_ids, since, now, steps)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return _window(project_ids, since, now, steps)


def _window(project_ids: list, since: datetime, now: datetime, steps: bool) -> dict[tuple, Cell]:
    state = RollupState.objects.filter(pk=1).first()
    cells: dict[tuple, Cell] = defaultdict(Cell)
    live = Q(queued_at__gte=since, queued_at__lt=now)
    if state is not None:
        start, end = max(state.rolled_from, ceil_hour(since)), min(state.rolled_until, hour_of(now))
        if start < end:
            rows = RunHourlyRollup.objects.filter(project_id__in=project_ids, hour__gte=start, hour__lt=end)
            for row in rows.order_by().only("hour", "status", "runs", "run_durations", "step_durations"):
                cell = cells[(row.hour, row.status)]
                cell.runs += row.runs
                histogram.merge(cell.run_durations, row.run_durations)
                histogram.merge(cell.step_durations, row.step_durations)
            # Index ranges on either side of the rolled hours, and the pending runs by key: their ids
            # as values, as a subquery in an OR would make PostgreSQL scan every run.
            pending = RollupPending.objects.filter(hour__gte=start, hour__lt=end).values_list("run_id", flat=True)
            live = Q(queued_at__gte=since, queued_at__lt=start) | Q(queued_at__gte=end, queued_at__lt=now)
            live |= Q(pk__in=list(pending))
    where = Q(project_id__in=project_ids) & live
    for row in _grouped_runs(where, "status"):
        cell = cells[(row["hour"], row["status"])]
        cell.runs += row["n"]
        _add(cell, row, "run_durations")
    if steps:
        for row in _grouped_steps(_prefixed(where, "run__"), run_status="run__status"):
            _add(cells[(row["hour"], row["run_status"])], row, "step_durations")
    return cells


def _prefixed(q: Q, prefix: str) -> Q:
    """``q`` with each lookup under ``prefix`` (the same runs, from their steps)."""
    clone = Q(*[_prefixed(c, prefix) if isinstance(c, Q) else (prefix + c[0], c[1]) for c in q.children])
    clone.connector, clone.negated = q.connector, q.negated
    return clone
