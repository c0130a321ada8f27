"""Running totals of calendar-window budgets (BudgetTotal), kept in the same transactions as the
ledger: the reservation adds the call's estimate, the settle moves it to spent, the release frees
it; an expired reservation stays counted, as in the ledger. Checking a budget is then one UPDATE
of one row, which also locks it for the check-and-reserve, whatever the window holds.

A total starts from the ledger (one SUM) at the first call of its window, or after the policy is
edited (its version is the policy's ``updated_at``). A call that was already in flight then, on a
worker whose catalog did not know the total, settles only the totals it knew: once every such call
has ended (the longest a task may run), the first check of the total counts it from the ledger once
more. Rolling windows move with every call and are summed from the ledger (policies.selectors).
"""

import json
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection
from django.utils import timezone

from .choices import PolicyKind, Window
from .models import BudgetTotal, Policy
from .money import ledger_usd
from .selectors import BudgetStatus, BudgetUse, budget_status, budget_status_from, budget_use
from .windows import Span, window_at

# The longest a call started before a total could go on without knowing it: a task's hard limit.
RECOUNT_AFTER = timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
_TABLE = BudgetTotal._meta.db_table


def kept(policy: Policy) -> bool:
    """Whether this policy is checked against a running total (a budget with a calendar window)."""
    return policy.kind == PolicyKind.BUDGET and policy.config.get("window") != Window.ROLLING


def take(policies: list[Policy], *, project_id, amount: Decimal, now: datetime) -> dict[int, tuple]:
    """Add ``amount`` to the totals of each budget whose window holds ``now``, locking them until
    commit, in policy order (every writer of totals locks them in that order: no deadlock); the
    caller holds the budget's scope lock (services.lock_scopes), which orders this with the start
    of a new total. Returns, by policy id, (ids of the totals added to, window, use before this
    amount, read from this policy version's own total)."""
    if not policies:
        return {}
    amount = ledger_usd(amount)
    taken = {}
    for policy in sorted(policies, key=lambda p: p.pk):
        span = window_at(policy.config, now)
        key = _key(policy, project_id, span)
        rows = _add_to_all(policy, project_id, amount, now, key)
        mine = next((row for row in rows if row[4]), None) or _start(policy, project_id, span, key, amount, now)
        total_id, spent, reserved, due = mine[:4]
        if due:
            spent, reserved = _recount(policy, project_id, span, total_id, amount)
        ids = sorted({row[0] for row in rows} | {total_id})  # moved in this order, as the UPDATE locks them
        taken[policy.pk] = (ids, span, BudgetUse(ledger_usd(spent), ledger_usd(reserved) - amount))
    return taken


def status(policy: Policy, project_id, now: datetime | None = None) -> BudgetStatus:
    """budget_status from the window's running total when it has one: one row to read, however
    much the window holds. Admission asks it for every run a budget covers."""
    now = now or timezone.now()
    if not kept(policy):
        return budget_status(policy, project_id, now)
    span = window_at(policy.config, now)
    row = (
        BudgetTotal.objects.filter(policy=policy, project_id=project_id, window_start=span.start)
        .filter(version=_version(policy))
        .values_list("spent", "reserved")
        .first()
    )
    if row is None:
        return budget_status(policy, project_id, now)
    return budget_status_from(policy, project_id, span, BudgetUse(*row), now)


def give_back(total_ids: list[int], amount: Decimal) -> None:
    """Undo take() for a call that was not allowed, in the same transaction."""
    move(total_ids, reserved=ledger_usd(amount), spent=Decimal(0))


def move(total_ids: list[int], *, reserved: Decimal, spent: Decimal) -> None:
    """A reservation of ``reserved`` settled at ``spent`` (0 when released), in the order taken."""
    with connection.cursor() as cursor:
        for total_id in total_ids:
            cursor.execute(
                f"UPDATE {_TABLE} SET reserved = reserved - %s, spent = spent + %s WHERE id = %s",  # noqa: S608
                [reserved, spent, total_id],
            )


def ids_of(counted_in) -> list[int]:
    """SpendEntry.counted_in as read by a raw statement (a list, or its JSON text)."""
    return json.loads(counted_in) if isinstance(counted_in, str) else list(counted_in or [])


def _key(policy: Policy, project_id, span: Span) -> list:
    project = BudgetTotal._meta.get_field("project").get_db_prep_value(project_id, connection)
    start = connection.ops.adapt_datetimefield_value(span.start)
    return [policy.pk, project, start, _version(policy)]


def _version(policy: Policy) -> int:
    return int(policy.updated_at.timestamp() * 1_000_000)


def _add_to_all(policy: Policy, project_id, amount: Decimal, now: datetime, key: list) -> list[tuple]:
    """One statement: add the amount to every total of this budget and project whose window holds
    ``now`` and lock them: this version's and, while workers that read the policy before an edit
    still run, the others' (an edit, e.g. to the timezone, may move the window too). Each version's
    check so counts the others' reservations; a call one of them does not cover counts for it too,
    until it settles, which errs on the side of the budget. Returns (id, spent, reserved, whether
    its recount is due, whether it is this version's) per total."""
    at = connection.ops.adapt_datetimefield_value(now)
    return _add(_HOLDING, [key[0], key[1], at, at], amount, now, key)


_HOLDING = "policy_id = %s AND project_id = %s AND window_end > %s AND window_start <= %s"
_THIS = "policy_id = %s AND project_id = %s AND window_start = %s AND version = %s"


def _add(where: str, params: list, amount: Decimal, now: datetime, key: list) -> list[tuple]:
    due_before = connection.ops.adapt_datetimefield_value(now - RECOUNT_AFTER)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_TABLE} SET reserved = reserved + %s WHERE {where}"  # noqa: S608
            " RETURNING id, spent, reserved, NOT recounted AND started_at < %s, window_start = %s AND version = %s",
            [amount, *params, due_before, key[2], key[3]],
        )
        return cursor.fetchall()


def _start(policy: Policy, project_id, span: Span, key: list, amount: Decimal, now: datetime) -> tuple:
    """The window's first call: count the total from the ledger. Two workers may both count; the
    unique key keeps the first row (the other waits for it to commit), and both then add to it."""
    use = budget_use(policy, project_id, span)
    BudgetTotal.objects.bulk_create(
        [
            BudgetTotal(
                policy=policy,
                project_id=project_id,
                window_start=span.start,
                window_end=span.end,
                version=key[3],
                spent=use.spent,
                reserved=use.reserved,
                started_at=now,
            )
        ],
        ignore_conflicts=True,
    )
    return _add(_THIS, key, amount, now, key)[0]


def _recount(policy: Policy, project_id, span: Span, total_id: int, amount: Decimal) -> tuple[Decimal, Decimal]:
    """Count the total from the ledger again, under its lock (taken by _add): writers that knew
    the total wait for it, so the ledger read now plus their moves after it is exact."""
    use = budget_use(policy, project_id, span)
    reserved = use.reserved + amount  # this call's amount, added by _add, is not in the ledger yet
    BudgetTotal.objects.filter(pk=total_id).update(spent=use.spent, reserved=reserved, recounted=True)
    return use.spent, reserved
