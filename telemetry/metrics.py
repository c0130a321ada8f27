"""Reads behind ``GET /api/v1/metrics``: how a set of projects' runs, steps, spend and policies
did since a point in time. Runs and steps come from the hourly roll-ups plus what is live
(telemetry/rollups.py), their durations as histograms (telemetry/histogram.py); spend and
decisions are one aggregate query each."""

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from policies.choices import EntryStatus, Outcome
from policies.models import PolicyDecision, SpendEntry
from policies.selectors import COUNTED
from runs.choices import RunStatus

from . import histogram, rollups

MICRODOLLAR = Decimal("0.000001")
FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


def project_metrics(project_ids: Iterable, since: datetime, now: datetime | None = None) -> dict:
    """Runs queued, calls made and decisions taken in these projects since ``since``."""
    project_ids = list(project_ids)
    by_status = dict.fromkeys(RunStatus.values, 0)
    run_durations, step_durations = {}, {}
    for (_, status), cell in rollups.window(project_ids, since, now or timezone.now()).items():
        by_status[status] = by_status.get(status, 0) + cell.runs
        histogram.merge(run_durations, cell.run_durations)
        histogram.merge(step_durations, cell.step_durations)
    spend = SpendEntry.objects.filter(project_id__in=project_ids, created_at__gte=since)
    decisions = PolicyDecision.objects.filter(project_id__in=project_ids, created_at__gte=since)
    finished = sum(by_status[status] for status in FINISHED)
    return {
        "runs": {
            "total": sum(by_status.values()),
            "by_status": by_status,
            "success_rate": round(by_status[RunStatus.SUCCEEDED] / finished, 4) if finished else None,
            "duration_ms": histogram.stats(run_durations),
        },
        "steps": {"duration_ms": histogram.stats(step_durations)},
        "spend": spend_breakdown(spend),
        "policy_decisions": {"by_outcome": _counts(decisions, "outcome", Outcome.values)},
    }


def _counts(queryset: QuerySet, field: str, names: list[str]) -> dict[str, int]:
    rows = dict(queryset.order_by().values_list(field).annotate(n=Count("pk")))
    return {name: rows.get(name, 0) for name in names}


def percentile(ordered: list[float], fraction: float) -> float | None:
    """Linear interpolation between the closest ranks, as PostgreSQL's percentile_cont does."""
    if not ordered:
        return None
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (position - low), 3)


# ------------------------------------------------------------------------------
# Spend
# ------------------------------------------------------------------------------
def _sums() -> dict:
    # Named apart from the ledger's own fields (Django refuses an annotation that shadows one);
    # _figures gives the rows their public names.
    return {
        "usd": Sum(COUNTED),
        "input": Sum("input_tokens"),
        "output": Sum("output_tokens"),
        "calls": Count("pk"),
        # A settled call with no cost: its model had no price.
        "unpriced_calls": Count("pk", filter=Q(status=EntryStatus.SETTLED, cost_usd__isnull=True)),
    }


def spend_breakdown(entries: QuerySet[SpendEntry]) -> dict:
    """Ledger totals by UTC day, agent, model and workflow. An entry counts its actual cost once
    settled and its reservation until then, as budgets do."""
    entries = entries.order_by()
    by_day = _grouped(entries.annotate(day=TruncDate("created_at", tzinfo=UTC)), "day", order=("day",))
    for row in by_day:
        row["day"] = row["day"].isoformat()
    return {
        "total": _total(by_day),
        "by_day": by_day,
        "by_agent": _grouped(entries, "agent_id", "agent__slug", rename={"agent_id": "agent", "agent__slug": "slug"}),
        "by_model": _grouped(entries, "provider", "model"),
        "by_workflow": _grouped(
            entries, "workflow_id", "workflow__slug", rename={"workflow_id": "workflow", "workflow__slug": "slug"}
        ),
    }


def _grouped(entries: QuerySet[SpendEntry], *keys: str, rename: dict | None = None, order=("-usd",)) -> list[dict]:
    """One row per distinct ``keys``, the biggest spender first unless ``order`` says otherwise."""
    rows = entries.values(*keys).annotate(**_sums()).order_by(*order, *keys)
    rename = rename or {}
    return [{**{rename.get(key, key): row[key] for key in keys}, **_figures(row)} for row in rows]


def _figures(row: dict) -> dict:
    input_tokens, output_tokens = row["input"] or 0, row["output"] or 0
    return {
        "cost_usd": (row["usd"] or Decimal(0)).quantize(MICRODOLLAR),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "tokens": input_tokens + output_tokens,
        "calls": row["calls"],
        "unpriced_calls": row["unpriced_calls"],
    }


def _total(by_day: list[dict]) -> dict:
    """Every entry falls on exactly one day, so the days add up to the total (no extra query)."""
    fields = ("input_tokens", "output_tokens", "tokens", "calls", "unpriced_calls")
    total = {name: sum(row[name] for row in by_day) for name in fields}
    total["cost_usd"] = sum((row["cost_usd"] for row in by_day), Decimal(0)).quantize(MICRODOLLAR)
    return total
