"""Running totals of calendar-window budgets: kept equal to the ledger by every reservation, settle
and release; started from the ledger for a new window or an edited policy; counted again once
every call in flight when they started has ended. Rolling windows are summed (test_services)."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import F, Sum
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from policies.choices import PolicyKind
from policies.exceptions import PolicyRefused
from policies.models import BudgetTotal, Policy, SpendEntry
from policies.selectors import budget_use
from policies.services import call_verdict, reservations_expire, spend_release, spend_settle
from policies.totals import RECOUNT_AFTER
from policies.windows import window_at
from runs.choices import StepStatus
from runs.tests.factories import start

from .test_services import agent_call, budget, policy, settle

USD = Decimal


def kept_and_counted(policy, project_id) -> tuple[tuple, tuple]:
    """(spent, reserved) in the budget's running total, and as the ledger sums them."""
    (total,) = BudgetTotal.objects.filter(policy=policy, project_id=project_id)
    use = budget_use(policy, project_id, window_at(policy.config, total.window_start))
    return (total.spent, total.reserved), (use.spent, use.reserved)


def test_reservations_settles_releases_and_expiries_keep_the_total_equal_to_the_ledger(run):
    daily = budget(run.project, "5.00")
    calls = [agent_call(run, estimate="0.60") for _ in range(5)]
    settled, released, _lost, late = [call_verdict(call) for call in calls[:4]]

    settle(calls[0], settled.entry_id, "0.25")  # below its estimate: frees the rest
    spend_release(entry_id=released.entry_id)
    # The reaper finds lost and late with no worker on them: expired, their estimates still count.
    assert reservations_expire(stale_before=timezone.now() + timedelta(seconds=1), running=StepStatus.RUNNING) == 2
    held = call_verdict(calls[4])
    settle(calls[3], late.entry_id, "0.40")  # a late settle of an expired reservation
    blocked = call_verdict(agent_call(run, estimate="4.00"))  # 0.25 + 0.60 + 0.40 + 0.60 + 4.00 > 5

    assert blocked.outcome == "blocked"
    kept, counted = kept_and_counted(daily, run.project_id)
    assert kept == counted == (USD("0.65"), USD("1.20"))  # spent 0.25 + 0.40; held 0.60 lost + 0.60 held
    assert SpendEntry.objects.get(pk=held.entry_id).counted_in == [BudgetTotal.objects.get().pk]


def test_checking_a_budget_reads_its_total_and_does_not_sum_its_window(run):
    budget(run.project, "5.00")
    call_verdict(agent_call(run, estimate="0.60"))  # the window's first call starts its total

    with CaptureQueriesContext(connection) as queries:
        second = call_verdict(agent_call(run, estimate="0.60"))

    assert second.allowed
    statements = [q["sql"] for q in queries.captured_queries]
    assert not [sql for sql in statements if "SUM(" in sql and "policies_spendentry" in sql]
    assert len([sql for sql in statements if "policies_budgettotal" in sql]) == 1  # one UPDATE ... RETURNING
    assert BudgetTotal.objects.get().reserved == USD("1.20")


def test_a_budget_added_mid_window_counts_what_the_window_spent_before_it(run):
    early = agent_call(run, estimate="0.70")
    settle(early, call_verdict(early).entry_id, "0.70")  # no budget yet: settled at once
    budget(run.project, "1.00")

    assert call_verdict(agent_call(run, estimate="0.40")).outcome == "blocked"
    assert call_verdict(agent_call(run, estimate="0.30")).allowed


def test_an_edited_budget_starts_a_new_total_from_the_ledger(run, catalog):
    daily = budget(run.project, "1.00")
    first = agent_call(run, estimate="0.60")
    settle(first, call_verdict(first).entry_id, "0.60")  # the writer's

    daily.config = {**daily.config, "agent": "helper"}
    daily.save()
    helpers = call_verdict(agent_call(run, agent=catalog.helper, estimate="0.60"))

    assert helpers.allowed  # the helper's own spend, not the writer's $0.60 the first total holds
    assert BudgetTotal.objects.filter(policy=daily).count() == 2


def test_a_budget_disabled_and_enabled_again_counts_what_was_spent_meanwhile(run):
    daily = budget(run.project, "1.00")
    call = agent_call(run, estimate="0.30")
    settle(call, call_verdict(call).entry_id, "0.30")
    daily.enabled = False
    daily.save()
    unguarded = agent_call(run, estimate="0.60")
    settle(unguarded, call_verdict(unguarded).entry_id, "0.60")

    daily.enabled = True
    daily.save()

    assert call_verdict(agent_call(run, estimate="0.30")).outcome == "blocked"  # 0.90 spent


def test_spend_a_total_did_not_know_of_is_counted_once_every_call_in_flight_has_ended(run):
    daily = budget(run.project, "1.00")
    call_verdict(agent_call(run, estimate="0.10"))  # starts the total
    # A call a worker began before the budget existed settles without a reservation.
    spend_settle(call=agent_call(run), entry_id=None, input_tokens=1, output_tokens=1, cost=USD("0.70"), price=None)
    assert call_verdict(agent_call(run, estimate="0.30")).allowed  # the total does not know yet

    BudgetTotal.objects.update(started_at=F("started_at") - RECOUNT_AFTER - timedelta(seconds=1))
    late = call_verdict(agent_call(run, estimate="0.30"))

    assert late.outcome == "blocked"  # 0.70 + 0.10 + 0.30 + 0.30 > 1.00
    kept, counted = kept_and_counted(daily, run.project_id)
    assert kept == counted == (USD("0.70"), USD("0.40"))
    assert BudgetTotal.objects.get().recounted


def test_a_settle_or_release_done_twice_moves_the_total_once(run):
    daily = budget(run.project, "5.00")
    call, other = agent_call(run, estimate="0.60"), agent_call(run, estimate="0.60")
    entry, freed = call_verdict(call).entry_id, call_verdict(other).entry_id

    for _ in range(2):  # a retry of a write whose commit lost its answer
        settle(call, entry, "0.25")
        spend_release(entry_id=freed)

    assert SpendEntry.objects.count() == 2
    kept, counted = kept_and_counted(daily, run.project_id)
    assert kept == counted == (USD("0.25"), USD("0"))


def test_a_blocked_call_gives_its_estimate_back_to_every_total_it_took_from(run):
    wide = budget(run.project, "5.00")
    narrow = policy(run.project, PolicyKind.BUDGET, {"amount_usd": 1, "window": "day", "agent": "writer"}, name="W")
    call_verdict(agent_call(run, estimate="0.60"))

    blocked = call_verdict(agent_call(run, estimate="0.60"))

    assert blocked.outcome == "blocked"
    assert sorted(BudgetTotal.objects.values_list("reserved", flat=True)) == [USD("0.60"), USD("0.60")]
    assert {t.policy_id for t in BudgetTotal.objects.all()} == {wide.pk, narrow.pk}


def test_admission_reads_the_windows_total_once_it_has_one(run):
    budget(run.project, "1.00")
    call_verdict(agent_call(run, estimate="1.00"))  # holds the whole budget

    with CaptureQueriesContext(connection) as queries, pytest.raises(PolicyRefused) as refused:
        start(run.workflow)

    assert "is exhausted: $1.00 of $1.00 used" in str(refused.value)
    assert not [q["sql"] for q in queries.captured_queries if "SUM(" in q["sql"] and "policies_spendentry" in q["sql"]]


def test_workers_judging_by_a_budget_before_and_after_its_edit_count_each_others_reservations(run):
    daily = budget(run.project, "1.00")
    before = Policy.objects.get(pk=daily.pk)  # what a worker that read it before the edit still judges by
    daily.config = {**daily.config, "timezone": "Pacific/Kiritimati"}  # its window moves too
    daily.save()

    assert call_verdict(agent_call(run, estimate="0.30"), [daily]).allowed  # the edited total starts
    assert call_verdict(agent_call(run, estimate="0.50"), [before]).allowed  # 0.80 of 1.00
    late = call_verdict(agent_call(run, estimate="0.30"), [daily])

    assert late.outcome == "blocked"  # 1.10: the edited total counted the other version's $0.50
    assert SpendEntry.objects.aggregate(total=Sum("reserved_usd"))["total"] == USD("0.80")
