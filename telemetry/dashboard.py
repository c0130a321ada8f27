"""What the admin's dashboard shows: counts that matter now and the charts' data, for the projects a
staff user may see (all of them for superusers), or one of them.

Every query is bounded by a time window or by the active statuses, so each reads an index range,
not the runs table: the counts of running, queued and waiting work use the (project, status,
queued_at) index over the few active rows; failed runs are those of the last 24 h; the charts read
the last 7 days of runs from the hourly roll-ups plus what is live (telemetry/rollups.py) and the
ledger through its (project, created_at). There is no COUNT over the whole table.
"""

import hashlib
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from policies.models import SpendEntry
from policies.selectors import budgets_of
from projects.models import Project
from runs.admin import finished_since
from runs.choices import RunStatus, StepStatus
from runs.models import Run, RunStep
from sparkops.admin_scoping import projects_with
from sparkops.console import seconds, usd
from sparkops.roles import Role

from . import histogram, rollups
from .liveness import liveness
from .metrics import spend_breakdown

TOP = 5
CHART_STATUSES = [
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
    RunStatus.RUNNING,
    RunStatus.WAITING_APPROVAL,
    RunStatus.QUEUED,
]


def visible_projects(request):
    projects = Project.objects.order_by("name")
    return projects if request.user.is_superuser else projects.filter(pk__in=projects_with(request, Role.VIEWER))


def dashboard(request) -> dict:
    """The dashboard's context: ``?project=<id>`` narrows it to one of the user's projects."""
    projects = list(visible_projects(request))
    chosen = next((p for p in projects if str(p.pk) == request.GET.get("project")), None)
    project_ids = [chosen.pk] if chosen else [p.pk for p in projects]
    now = timezone.now()
    chart_data = cached_charts(project_ids, now)
    week = chart_data["durations"]["week"]
    return {
        "projects": projects,
        "project": chosen,
        "now": now,
        "cards": cards(project_ids, now, chosen),
        "budgets": budget_rows(project_ids, {p.pk: p for p in projects}),
        "charts": chart_data,
        "durations": {"p50": seconds(week["p50"]), "p95": seconds(week["p95"])},
        # Worker and beat heartbeats: one cache read, remembered 2 s per process.
        "liveness": liveness(),
    }


# ------------------------------------------------------------------------------
# Counts
# ------------------------------------------------------------------------------
def cards(project_ids: list, now: datetime, chosen: Project | None) -> list[dict]:
    runs = Run.objects.filter(project_id__in=project_ids)
    waiting_steps = RunStep.objects.filter(  # through active runs: their index, not every step ever
        status=StepStatus.WAITING_APPROVAL,
        run__project_id__in=project_ids,
        run__status__in=[RunStatus.RUNNING, RunStatus.WAITING_APPROVAL],
    )
    scope = f"&project={chosen.pk}" if chosen else ""
    run_list, step_list = reverse("admin:runs_run_changelist"), reverse("admin:runs_runstep_changelist")
    queued = runs.filter(status=RunStatus.QUEUED)
    return [
        _card("running", "Running", runs.filter(status=RunStatus.RUNNING).count(), "busy", run_list, scope),
        _card("queued", "Queued", queued.count(), "idle", run_list, scope),
        _card("held", "Held for a slot", queued.filter(waiting_on__isnull=False).count(), "wait", run_list, scope),
        {
            **_card("waiting", "Waiting for approval", waiting_steps.count(), "wait", step_list, scope),
            "url": f"{step_list}?waiting=yes{scope}",
        },
        {
            **_card("failed", "Failed, last 24 h", 0, "bad", run_list, scope),
            "n": runs.filter(finished_since(now - timedelta(hours=24)), status=RunStatus.FAILED).count(),
            "url": f"{run_list}?status__exact=failed&finished=24h{scope}",
        },
    ]


def _card(key: str, label: str, n: int, tone: str, url: str, scope: str) -> dict:
    status = {"running": "running", "queued": "queued", "held": "queued"}.get(key, key)
    return {"key": key, "label": label, "n": n, "tone": tone, "url": f"{url}?status__exact={status}{scope}"}


def budget_rows(project_ids: list, projects: dict) -> list[dict]:
    """Each budget in its current window: what is used (spent + reserved) against its amount."""
    rows = []
    for status in budgets_of(project_ids):
        used = status.spent + status.reserved
        rows.append(
            {
                "name": status.policy.name,
                "project": projects.get(status.project_id),
                "window": status.policy.config.get("window", ""),
                "used": usd(used),
                "amount": usd(status.amount),
                "percent": round(float(used / status.amount * 100), 1) if status.amount else 0.0,
                "exhausted": status.exhausted,
            }
        )
    return rows


# ------------------------------------------------------------------------------
# Charts
# ------------------------------------------------------------------------------
def cached_charts(project_ids: list, now: datetime) -> dict:
    """The charts, kept for SPARKOPS_DASHBOARD_CACHE_SECONDS (60 s): a week of runs is hundreds of
    thousands of rows on a busy installation, and a minute-old chart reads the same; the counts
    above them are always read afresh."""
    seconds = getattr(settings, "SPARKOPS_DASHBOARD_CACHE_SECONDS", 60)
    key = "dashboard:charts:" + hashlib.sha256(",".join(sorted(map(str, project_ids))).encode()).hexdigest()
    return cache.get_or_set(key, lambda: charts(project_ids, now), seconds) if seconds else charts(project_ids, now)


def charts(project_ids: list, now: datetime) -> dict:
    week_ago = now - timedelta(days=7)
    runs = rollups.window(project_ids, week_ago, now, steps=False)
    first_day = (now - timedelta(days=6)).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    spend = spend_breakdown(SpendEntry.objects.filter(project_id__in=project_ids, created_at__gte=first_day))
    return {
        "runs_24h": runs_by_hour(runs, now - timedelta(hours=24), now, hours=1),
        "runs_7d": runs_by_hour(runs, week_ago, now, hours=6),
        "spend_by_day": spend_by_day(spend["by_day"], first_day, project_ids),
        "top_agents": _top(spend["by_agent"], lambda row: row["slug"] or "(deleted)"),
        "top_models": _top(spend["by_model"], lambda row: f"{row['provider']}/{row['model']}"),
        "top_workflows": _top(spend["by_workflow"], lambda row: row["slug"] or "(none)"),
        "durations": durations_by_day(runs, first_day),
    }


def runs_by_hour(cells: dict, since: datetime, now: datetime, hours: int) -> dict:
    """Runs queued per bucket of ``hours`` hours from the hour ``since`` falls in, by status (a
    stacked bar chart), from the window's {(hour, status): cell}."""
    start = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    buckets = [
        start + timedelta(hours=hours * i) for i in range(int((now - start).total_seconds() // 3600 // hours) + 1)
    ]
    counts = defaultdict(int)
    for (hour, status), cell in cells.items():
        if hour >= start:
            counts[(int((hour - start).total_seconds() // 3600 // hours), status)] += cell.runs
    label = "%H:%M" if hours == 1 else "%a %H:%M"
    return {
        "labels": [timezone.localtime(b).strftime(label) for b in buckets],
        "series": {str(s.label): [counts[(i, s.value)] for i in range(len(buckets))] for s in CHART_STATUSES},
    }


def spend_by_day(by_day: list[dict], first_day: datetime, project_ids: list) -> dict:
    days = [(first_day + timedelta(days=i)).date().isoformat() for i in range(7)]
    spent = {row["day"]: float(row["cost_usd"]) for row in by_day}
    daily = [b for b in budgets_of(project_ids) if b.policy.config.get("window") == "day"]
    budget = float(sum((b.amount for b in daily), Decimal(0))) if daily else None
    return {"labels": days, "spent": [spent.get(day, 0.0) for day in days], "budget": budget}


def _top(rows: list[dict], name) -> dict:
    rows = rows[:TOP]
    return {"labels": [name(row) for row in rows], "usd": [float(row["cost_usd"]) for row in rows]}


def durations_by_day(cells: dict, first_day: datetime) -> dict:
    """p50 and p95 run duration per UTC day and over the days, from the hours' histograms."""
    days = [first_day + timedelta(days=i) for i in range(7)]
    per_day = {day: {} for day in days}
    for (hour, _), cell in cells.items():
        if hour >= first_day:
            histogram.merge(per_day[days[(hour - first_day).days]], cell.run_durations)
    week = {}
    for durations in per_day.values():
        histogram.merge(week, durations)
    return {
        "labels": [day.date().isoformat() for day in days],
        "p50": [_seconds(per_day[day], 0.5) for day in days],
        "p95": [_seconds(per_day[day], 0.95) for day in days],
        "week": {"p50": _seconds(week, 0.5), "p95": _seconds(week, 0.95), "count": histogram.count(week)},
    }


def _seconds(durations: dict, fraction: float) -> float | None:
    """The chart is in seconds; histograms hold milliseconds."""
    ms = histogram.percentile(durations, fraction)
    return None if ms is None else round(ms / 1000, 3)
