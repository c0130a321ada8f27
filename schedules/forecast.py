"""What a schedule will spend: its fires in the coming day, week or month (our cron reading, in
its timezone, DST included), each run's worst case and expected cost (runs/estimates.py), and for
each budget its runs would count against, the spend projected in each of its windows against the
amount, with the first fire at which the budget would run out. A forecast warns; it never refuses.

A window's projected spend is what it has used so far (spent and reserved, for the window holding
now; nothing for later windows) plus this schedule's fires in it, at the cost each run counts
against that budget (its covered steps: a budget narrowed to an agent or a model counts only
those calls).
"""

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.utils import timezone

from policies.choices import PolicyKind, Window
from policies.money import config_usd, usd
from policies.selectors import budget_use, policies_for
from policies.windows import window_at
from runs import estimates
from workflows.selectors import latest_published_version

from . import cron
from .models import Schedule

PERIODS = ("day", "week", "month")
DEFAULT_PERIOD = "month"
#: A cron that fires every minute fires 44,640 times in a 31-day month; nothing fires more.
MAX_FIRES = 50_000


def period_end(start: datetime, period: str, zone: ZoneInfo) -> datetime:
    """The end of the period from ``start``, counted on the local calendar: a day across a DST
    change is 23 or 25 hours, a month from 31 January ends on 28 (or 29) February."""
    local = start.astimezone(zone)
    if period == "day":
        day = local.date() + timedelta(days=1)
    elif period == "week":
        day = local.date() + timedelta(days=7)
    else:
        year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
        day = local.date().replace(year=year, month=month, day=min(local.day, calendar.monthrange(year, month)[1]))
    return datetime.combine(day, local.time(), tzinfo=zone).replace(fold=0).astimezone(start.tzinfo)


def fires_between(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    zone = cron.zone(schedule.timezone)
    found = []
    for instant in cron.fires_after(cron.parse(schedule.cron), zone, start):
        if instant >= end or len(found) >= MAX_FIRES:
            break
        found.append(instant)
    return found


@dataclass
class RunCost:
    """What one run counts against a limit: (worst, expected) USD; None when unknown."""

    worst: Decimal | None
    expected: Decimal | None
    unpriced: list[str]


def _run_cost(steps: list[estimates.StepEstimate]) -> RunCost:
    worst, expected, unpriced = estimates.step_sums(steps)
    return RunCost(worst, expected, unpriced)


# ------------------------------------------------------------------------------
# One budget over the period
# ------------------------------------------------------------------------------
def _projection(policy, project_id, fires: list[datetime], cost: Decimal | None, now: datetime) -> dict:
    """Per window: used so far, this schedule's fires, the projected spend; and the first fire at
    which the budget would be used up (None: it lasts the period). A rolling window is reported
    once, where it holds the most fires."""
    config, amount = policy.config, config_usd(policy.config, "amount_usd")
    current = budget_use(policy, project_id, window_at(config, now)).total
    windows: dict[datetime | None, dict] = {}
    runs_out, oldest = None, 0
    span = None
    for index, fire in enumerate(fires):
        if span is None or config["window"] == Window.ROLLING or fire >= span.end:
            span = window_at(config, fire)  # a calendar window holds every fire up to its end
        if config["window"] == Window.ROLLING:
            while fires[oldest] <= fire - span.length:  # fires that left the window by this one
                oldest += 1
            key, start, used, count = None, fire - span.length, current, index - oldest + 1
        else:
            key, start = span.start, span.start
            used = current if span.start <= now < span.end else Decimal(0)
            count = windows.get(key, {}).get("fires", 0) + 1
        projected = None if cost is None else used + cost * count
        if count > windows.get(key, {}).get("fires", 0):
            windows[key] = {"start": start, "end": span.end, "used": used, "fires": count, "projected": projected}
        if runs_out is None and projected is not None and projected >= amount:
            runs_out = fire
    return {"windows": list(windows.values()), "runs_out_at": runs_out, "amount": amount}


def _budget_forecast(policy, schedule: Schedule, steps, fires, now: datetime) -> dict | None:
    covered = estimates.covered_steps(policy, steps, schedule.workflow.slug)
    if not covered:
        return None
    cost = _run_cost(covered)
    expected = _projection(policy, schedule.project_id, fires, cost.expected, now)
    worst = _projection(policy, schedule.project_id, fires, cost.worst, now)
    peak = max((w["projected"] for w in expected["windows"] if w["projected"] is not None), default=None)
    return {
        "policy": policy.pk,
        "name": policy.name,
        "action": policy.action,
        "window": policy.config["window"],
        "amount_usd": estimates.money(expected["amount"]),
        "per_run_expected_usd": estimates.money(cost.expected),
        "per_run_worst_case_usd": estimates.money(cost.worst),
        "unpriced_models": cost.unpriced,
        "windows": [_window(w, worst_w) for w, worst_w in zip(expected["windows"], worst["windows"], strict=True)],
        "peak_projected_usd": estimates.money(peak),
        "runs_out_at": _iso(expected["runs_out_at"]),
        "runs_out_at_worst_case": _iso(worst["runs_out_at"]),
    }


def _window(expected: dict, worst: dict) -> dict:
    return {
        "start": expected["start"].isoformat(),
        "end": expected["end"].isoformat(),
        "used_usd": estimates.money(expected["used"]),
        "fires": expected["fires"],
        "projected_expected_usd": estimates.money(expected["projected"]),
        "projected_worst_case_usd": estimates.money(worst["projected"]),
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _warning(budget: dict, zone: ZoneInfo) -> str | None:
    when, how = budget["runs_out_at"], "would"
    if when is None:
        when, how = budget["runs_out_at_worst_case"], "could, in the worst case,"
    if when is None:
        return None
    local = datetime.fromisoformat(when).astimezone(zone)
    window = budget["window"]
    return (
        f"Budget {budget['name']!r} (${usd(Decimal(budget['amount_usd']))} a {window} window) {how} run out "
        f"on {local:%Y-%m-%d %H:%M} {local.tzname()} with this schedule's runs; later runs would be refused."
    )


# ------------------------------------------------------------------------------
# The forecast
# ------------------------------------------------------------------------------
def schedule_forecast(*, schedule: Schedule, period: str = DEFAULT_PERIOD, now: datetime | None = None) -> dict:
    """The forecast of ``schedule`` over the period from ``now``, as if it were enabled."""
    now = now or timezone.now()
    zone = cron.zone(schedule.timezone)
    end = period_end(now, period, zone)
    fires = fires_between(schedule, now, end)
    version = schedule.version or latest_published_version(schedule.workflow)
    steps = estimates.step_estimates(estimates.Question(version=version, inputs=schedule.inputs))
    per_run = _run_cost([s for s in steps if s.calls])
    policies = policies_for(schedule.project_id, [PolicyKind.BUDGET])
    budgets = [b for p in policies if (b := _budget_forecast(p, schedule, steps, fires, now))]
    return {
        "period": period,
        "start": now.isoformat(),
        "end": end.isoformat(),
        "timezone": schedule.timezone,
        "enabled": schedule.enabled,
        "fires": len(fires),
        "first_fire": _iso(fires[0] if fires else None),
        "last_fire": _iso(fires[-1] if fires else None),
        "per_run": {
            "worst_case_usd": estimates.money(per_run.worst),
            "expected_usd": estimates.money(per_run.expected),
            "expected_from_history": any(s.expected for s in steps),
            "unpriced_models": per_run.unpriced,
        },
        "spend": {
            "worst_case_usd": estimates.money(_times(per_run.worst, len(fires))),
            "expected_usd": estimates.money(_times(per_run.expected, len(fires))),
        },
        "budgets": budgets,
        "warnings": [w for b in budgets if (w := _warning(b, zone))],
    }


def _times(cost: Decimal | None, count: int) -> Decimal | None:
    return None if cost is None else cost * count
