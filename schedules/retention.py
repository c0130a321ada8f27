"""Retention: history older than its project's retention (or the global default) is deleted in
small batches, each its own short transaction: ``DELETE … WHERE id IN (SELECT id … LIMIT n)``, so
no statement holds locks for long and a busy table keeps taking writes between batches.

Four kinds: run events and policy decisions of finished runs, schedule fires, and finished runs
(with their steps, events, decisions and notices). The spend ledger is never pruned, and a run
keeps its row while any of its spend entries is still in flight or inside a budget window that is
open now (deleting the run would unlink those entries from it: ``SpendEntry.run`` is SET_NULL)."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from policies.choices import EntryStatus, PolicyKind
from policies.models import Policy, PolicyDecision
from policies.windows import window_at
from projects.models import Project
from runs.choices import RUN_TERMINAL
from runs.models import Run, RunEvent

from .choices import FireOutcome
from .models import ScheduleFire

KINDS = ("run_events", "schedule_fires", "policy_decisions", "finished_runs")


@dataclass(frozen=True)
class Pruned:
    kind: str
    project: Project
    cutoff: datetime
    rows: int


def retention_days(project: Project, kind: str) -> int:
    """The project's days for ``kind``, else the global default; 0 keeps everything."""
    own = getattr(project, f"{kind}_retention_days")
    return own if own else settings.SPARKOPS_RETENTION_DAYS.get(kind, 0)


def open_window_start(project: Project, now: datetime) -> datetime | None:
    """Where the earliest budget window open now starts, of the budgets that count this project's
    spend (its own and the global ones); None when no budget applies."""
    budgets = Policy.objects.filter(Q(project=project) | Q(project__isnull=True), kind=PolicyKind.BUDGET)
    starts = [window_at(budget.config, now).start for budget in budgets]
    return min(starts, default=None)


def prunable(kind: str, project: Project, cutoff: datetime, now: datetime) -> models.QuerySet:
    finished = Q(run__status__in=RUN_TERMINAL)
    if kind == "run_events":
        return RunEvent.objects.filter(finished, run__project=project, created_at__lt=cutoff)
    if kind == "schedule_fires":
        # A buffered fire still waits to start its run: it is not history yet.
        fires = ScheduleFire.objects.filter(schedule__project=project, created_at__lt=cutoff)
        return fires.exclude(outcome=FireOutcome.BUFFERED)
    if kind == "policy_decisions":
        decisions = PolicyDecision.objects.filter(project=project, created_at__lt=cutoff)
        return decisions.filter(Q(run__isnull=True) | finished)
    runs = Run.objects.filter(project=project, status__in=RUN_TERMINAL, finished_at__lt=cutoff)
    runs = runs.exclude(spend__status=EntryStatus.RESERVED)
    if (window_start := open_window_start(project, now)) is not None:
        runs = runs.exclude(spend__created_at__gte=window_start)
    return runs


def plan(*, now: datetime | None = None, projects=None) -> Iterator[tuple[str, Project, datetime, models.QuerySet]]:
    now = now or timezone.now()
    for project in projects if projects is not None else Project.objects.order_by("slug"):
        for kind in KINDS:
            days = retention_days(project, kind)
            if days:
                cutoff = now - timedelta(days=days)
                yield kind, project, cutoff, prunable(kind, project, cutoff, now)


def prune(
    *, dry_run: bool = False, batch_size: int | None = None, now: datetime | None = None, projects=None,
    on_batch: Callable[[str, int], None] | None = None,
) -> list[Pruned]:  # fmt: skip
    """Delete (or, dry, count) what each project's retention lets go. Returns a line per kind and
    project with something to prune."""
    batch_size = batch_size or settings.SPARKOPS_PRUNE_BATCH_SIZE
    report = []
    for kind, project, cutoff, queryset in plan(now=now, projects=projects):
        rows = queryset.count() if dry_run else _delete_in_batches(kind, queryset, batch_size, on_batch)
        if rows:
            report.append(Pruned(kind, project, cutoff, rows))
    return report


def _delete_in_batches(kind: str, queryset: models.QuerySet, size: int, on_batch) -> int:
    total = 0
    while True:
        with transaction.atomic():
            batch = queryset.model.objects.filter(pk__in=queryset.values("pk")[:size])
            # Run events, fires and decisions go in one statement; a run's delete also collects
            # its steps, events, decisions and notices, and unlinks its (closed-window) spend.
            deleted = _count(kind, batch.delete())
        total += deleted
        if on_batch is not None and deleted:
            on_batch(kind, deleted)
        if deleted < size:
            return total


def _count(kind: str, result: tuple[int, dict[str, int]]) -> int:
    total, per_model = result
    label = {"run_events": RunEvent, "schedule_fires": ScheduleFire, "policy_decisions": PolicyDecision}
    return per_model.get((label.get(kind) or Run)._meta.label, 0) if total else 0
