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
from django.db.models import Q
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


RUN_FIELDS = ("pk", "project_id", "workflow_id", "status", "queued_at", "started_at", "finished_at")


def _count_runs(runs: list[dict], cells: dict, key) -> dict:
    """Adds ``runs`` to ``cells[key(run)]``; returns each run's key by its id (for its steps)."""
    keys = {}
    for run in runs:
        cell = cells[keys.setdefault(run["pk"], key(run))]
        cell.runs += 1
        cell.cost_usd += run.get("cost_usd") or 0
        cell.input_tokens += run.get("input_tokens") or 0
        cell.output_tokens += run.get("output_tokens") or 0
        if run["started_at"] and run["finished_at"]:
            histogram.add(cell.run_durations, (run["finished_at"] - run["started_at"]).total_seconds() * 1000)
    return keys


def _count_steps(steps: Iterable[tuple], cells: dict, keys: dict) -> None:
    for run_id, started, finished in steps:
        histogram.add(cells[keys[run_id]].step_durations, (finished - started).total_seconds() * 1000)


def _durations_of_steps(runs: Q):
    return (
        RunStep.objects.filter(runs, started_at__isnull=False, finished_at__isnull=False)
        .order_by()
        .values_list("run_id", "started_at", "finished_at")
    )


def _row_key(run: dict) -> tuple:
    return (run["project_id"], hour_of(run["queued_at"]), run["workflow_id"], run["status"])


def _runs_of(where: Q) -> list[dict]:
    return list(Run.objects.filter(where).order_by().values(*RUN_FIELDS, "cost_usd", "input_tokens", "output_tokens"))


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
    runs = _runs_of(_queued_in(ranges))
    finished = [run for run in runs if run["status"] in TERMINAL]
    RollupPending.objects.bulk_create(
        RollupPending(run_id=run["pk"], hour=hour_of(run["queued_at"])) for run in runs if run["status"] not in TERMINAL
    )
    cells = defaultdict(Cell)
    keys = _count_runs(finished, cells, _row_key)
    _count_steps(_durations_of_steps(_queued_in(ranges, "run__") & Q(run__status__in=TERMINAL)), cells, keys)
    RunHourlyRollup.objects.bulk_create(
        (
            RunHourlyRollup(project_id=p, hour=h, workflow_id=w, status=s, **vars(cell))
            for (p, h, w, s), cell in cells.items()
        ),
        batch_size=500,
    )
    return len(runs)


def _count_finished_pending(skip: list[tuple[datetime, datetime]]) -> int:
    """Adds the pending runs that have finished since (outside the hours rolled afresh) to their
    hours' rows, and forgets them."""
    pending = RollupPending.objects.all()
    for start, end in skip:
        pending = pending.exclude(hour__gte=start, hour__lt=end)
    ids = list(pending.values_list("run_id", flat=True))
    if not ids:
        return 0
    runs = _runs_of(Q(pk__in=ids, status__in=TERMINAL))
    cells = defaultdict(Cell)
    keys = _count_runs(runs, cells, _row_key)
    _count_steps(_durations_of_steps(Q(run_id__in=list(keys))), cells, keys)
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
    RollupPending.objects.filter(run_id__in=list(keys)).delete()
    return len(runs)


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
    the rolled hours, and live reads of their pending runs and of every run outside them. Four
    queries (three without ``steps``), in one snapshot so a tick committing meanwhile cannot make a
    run count twice or not at all."""
    outermost = not connection.in_atomic_block  # else the snapshot is the caller's (tests, ATOMIC_REQUESTS)
    with transaction.atomic(savepoint=False):
        if outermost and connection.vendor == "postgresql":
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
            pending = RollupPending.objects.filter(hour__gte=start, hour__lt=end).values("run_id")
            live = (live & ~Q(queued_at__gte=start, queued_at__lt=end)) | Q(pk__in=pending)
    where = Q(project_id__in=project_ids) & live
    runs = list(Run.objects.filter(where).order_by().values(*RUN_FIELDS))
    keys = _count_runs(runs, cells, lambda run: (hour_of(run["queued_at"]), run["status"]))
    if steps:
        run_q = Q(run__project_id__in=project_ids) & _prefixed(live, "run__")
        _count_steps(_durations_of_steps(run_q), cells, keys)
    return cells


def _prefixed(q: Q, prefix: str) -> Q:
    """``q`` with each lookup under ``prefix`` (the same runs, from their steps)."""
    clone = Q(*[_prefixed(c, prefix) if isinstance(c, Q) else (prefix + c[0], c[1]) for c in q.children])
    clone.connector, clone.negated = q.connector, q.negated
    return clone
