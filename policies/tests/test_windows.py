"""Budget windows in a timezone: local midnight, DST days of 23 and 25 hours, a day whose midnight
does not exist, rolling windows, month ends; and the budget status read with time travel."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine

from policies.choices import EntryStatus
from policies.selectors import budget_status
from policies.windows import window_at

from .factories import PolicyFactory, SpendEntryFactory

BERLIN, NEW_YORK = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")
SANTIAGO, HAVANA = ZoneInfo("America/Santiago"), ZoneInfo("America/Havana")
HOUR = timedelta(hours=1)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(zone: ZoneInfo, *args, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=zone, fold=fold)


def day(zone: str) -> dict:
    return {"amount_usd": 10, "window": "day", "timezone": zone}


# ------------------------------------------------------------------------------
# Calendar days across local midnight
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("zone", "late", "early", "midnight_utc"),
    [
        # 23:30 on the 15th and 00:30 on the 16th, local; the 16th starts at this UTC instant.
        ("Europe/Berlin", local(BERLIN, 2026, 6, 15, 23, 30), local(BERLIN, 2026, 6, 16, 0, 30), utc(2026, 6, 15, 22)),
        ("Europe/Berlin", local(BERLIN, 2026, 1, 15, 23, 30), local(BERLIN, 2026, 1, 16, 0, 30), utc(2026, 1, 15, 23)),
        (
            "America/New_York",
            local(NEW_YORK, 2026, 6, 15, 23, 30),
            local(NEW_YORK, 2026, 6, 16, 0, 30),
            utc(2026, 6, 16, 4),
        ),
        (
            "America/New_York",
            local(NEW_YORK, 2026, 1, 15, 23, 30),
            local(NEW_YORK, 2026, 1, 16, 0, 30),
            utc(2026, 1, 16, 5),
        ),
    ],
)
def test_a_day_window_starts_at_local_midnight(zone, late, early, midnight_utc):
    yesterday, today = window_at(day(zone), late), window_at(day(zone), early)

    assert yesterday.end == today.start == midnight_utc
    assert yesterday.start == midnight_utc - 24 * HOUR
    assert today.end == midnight_utc + 24 * HOUR


def test_local_midnight_itself_belongs_to_the_new_day():
    midnight = local(BERLIN, 2026, 6, 16).astimezone(UTC)

    assert window_at(day("Europe/Berlin"), midnight).start == midnight
    assert window_at(day("Europe/Berlin"), midnight - timedelta(microseconds=1)).end == midnight


def test_a_budget_without_a_timezone_counts_utc_days():
    span = window_at({"amount_usd": 1, "window": "day"}, utc(2026, 6, 15, 23, 59))

    assert (span.start, span.end) == (utc(2026, 6, 15), utc(2026, 6, 16))


# ------------------------------------------------------------------------------
# DST: days of 23 and 25 hours
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("zone", "noon", "start", "hours"),
    [
        ("America/New_York", local(NEW_YORK, 2026, 3, 8, 12), utc(2026, 3, 8, 5), 23),  # spring forward
        ("America/New_York", local(NEW_YORK, 2026, 11, 1, 12), utc(2026, 11, 1, 4), 25),  # fall back
        ("Europe/Berlin", local(BERLIN, 2026, 3, 29, 12), utc(2026, 3, 28, 23), 23),
        ("Europe/Berlin", local(BERLIN, 2026, 10, 25, 12), utc(2026, 10, 24, 22), 25),
        ("America/New_York", local(NEW_YORK, 2026, 3, 7, 12), utc(2026, 3, 7, 5), 24),  # the day before
    ],
)
def test_a_dst_day_window_is_as_long_as_the_local_day(zone, noon, start, hours):
    span = window_at(day(zone), noon)

    assert span.start == start
    assert span.length == hours * HOUR
    assert window_at(day(zone), span.end).start == span.end  # the next day starts where it ends


def test_the_repeated_hour_of_a_fall_back_day_is_in_that_days_window():
    # 01:30 happens twice in New York on 2026-11-01; both are in the 25-hour window.
    first, second = local(NEW_YORK, 2026, 11, 1, 1, 30), local(NEW_YORK, 2026, 11, 1, 1, 30, fold=1)
    assert second.astimezone(UTC) - first.astimezone(UTC) == HOUR

    assert window_at(day("America/New_York"), first) == window_at(day("America/New_York"), second)


# ------------------------------------------------------------------------------
# A midnight that does not exist, and one that happens twice
# ------------------------------------------------------------------------------
def _exists(moment: datetime) -> bool:
    return moment.astimezone(UTC).astimezone(moment.tzinfo).replace(tzinfo=None) == moment.replace(tzinfo=None)


@pytest.mark.parametrize(
    ("zone", "date_", "first_instant"),
    [
        # Santiago springs forward at 00:00 -> 01:00 on 2026-09-06; Havana on 2026-03-08.
        ("America/Santiago", (2026, 9, 6), local(SANTIAGO, 2026, 9, 6, 1)),
        ("America/Havana", (2026, 3, 8), local(HAVANA, 2026, 3, 8, 1)),
    ],
)
def test_a_day_without_a_midnight_starts_at_its_first_real_instant(zone, date_, first_instant):
    assert not _exists(local(ZoneInfo(zone), *date_))  # the calendar this test relies on
    assert _exists(first_instant)

    span = window_at(day(zone), local(ZoneInfo(zone), *date_, 12))

    assert span.start == first_instant.astimezone(UTC)
    assert span.length == 23 * HOUR
    # The day before ends there too: no instant is in two windows or in none.
    assert window_at(day(zone), span.start - timedelta(microseconds=1)).end == span.start
    assert window_at(day(zone), span.start - timedelta(microseconds=1)).length == 24 * HOUR


def test_a_day_whose_midnight_happens_twice_starts_at_the_first():
    # Havana falls back 01:00 -> 00:00 on 2026-11-01: 00:00 local is 04:00 and again 05:00 UTC.
    first, second = local(HAVANA, 2026, 11, 1), local(HAVANA, 2026, 11, 1, fold=1)
    assert (first.astimezone(UTC), second.astimezone(UTC)) == (utc(2026, 11, 1, 4), utc(2026, 11, 1, 5))

    span = window_at(day("America/Havana"), local(HAVANA, 2026, 11, 1, 0, 30, fold=1))

    assert span.start == utc(2026, 11, 1, 4)
    assert span.length == 25 * HOUR
    assert window_at(day("America/Havana"), utc(2026, 11, 1, 3, 59)).end == span.start


# ------------------------------------------------------------------------------
# Weeks, months, rolling windows
# ------------------------------------------------------------------------------
def test_a_week_window_runs_monday_to_monday_in_the_zone():
    # Sunday 2026-03-08 in New York is the spring-forward day: that week has 167 hours.
    span = window_at(
        {"amount_usd": 1, "window": "week", "timezone": "America/New_York"}, local(NEW_YORK, 2026, 3, 8, 23)
    )

    assert span.start == local(NEW_YORK, 2026, 3, 2).astimezone(UTC)
    assert span.end == local(NEW_YORK, 2026, 3, 9).astimezone(UTC)
    assert span.length == 7 * 24 * HOUR - HOUR


def test_a_monday_starts_a_new_week():
    config = {"amount_usd": 1, "window": "week", "timezone": "Europe/Berlin"}

    sunday_night = window_at(config, local(BERLIN, 2026, 6, 14, 23, 30))
    monday_morning = window_at(config, local(BERLIN, 2026, 6, 15, 0, 30))

    assert sunday_night.end == monday_morning.start == local(BERLIN, 2026, 6, 15).astimezone(UTC)


@pytest.mark.parametrize(
    ("moment", "start", "end"),
    [
        (local(BERLIN, 2026, 1, 31, 23, 30), local(BERLIN, 2026, 1, 1), local(BERLIN, 2026, 2, 1)),
        (local(BERLIN, 2026, 2, 1, 0, 30), local(BERLIN, 2026, 2, 1), local(BERLIN, 2026, 3, 1)),
        (local(BERLIN, 2026, 3, 15), local(BERLIN, 2026, 3, 1), local(BERLIN, 2026, 4, 1)),  # 743 hours
        (local(BERLIN, 2026, 12, 31, 23, 59), local(BERLIN, 2026, 12, 1), local(BERLIN, 2027, 1, 1)),
        (local(BERLIN, 2028, 2, 29, 12), local(BERLIN, 2028, 2, 1), local(BERLIN, 2028, 3, 1)),
    ],
)
def test_a_month_window_runs_from_the_first_to_the_first_in_the_zone(moment, start, end):
    span = window_at({"amount_usd": 1, "window": "month", "timezone": "Europe/Berlin"}, moment)

    assert (span.start, span.end) == (start.astimezone(UTC), end.astimezone(UTC))


def test_a_month_with_a_dst_change_is_an_hour_short():
    span = window_at({"amount_usd": 1, "window": "month", "timezone": "Europe/Berlin"}, local(BERLIN, 2026, 3, 15))

    assert span.length == 31 * 24 * HOUR - HOUR


def test_a_rolling_window_is_the_last_n_days_up_to_now_whatever_the_zone():
    now = utc(2026, 3, 8, 12, 34, 56)

    span = window_at({"amount_usd": 1, "window": "rolling", "days": 7, "timezone": "America/New_York"}, now)

    assert (span.start, span.end) == (now - timedelta(days=7), now)
    assert span.length == 7 * 24 * HOUR  # the DST change inside does not shorten it


# ------------------------------------------------------------------------------
# Budget status with time travel
# ------------------------------------------------------------------------------
@pytest.fixture
def berlin_budget(db):
    return PolicyFactory(config={"amount_usd": 10, "window": "day", "timezone": "Europe/Berlin"})


def spent(policy, at: datetime, cost: str | None):
    cost_usd = None if cost is None else Decimal(cost)
    return SpendEntryFactory(project=policy.project, created_at=at.astimezone(UTC), cost_usd=cost_usd)


def reserved(policy, at: datetime, estimate: str, status=EntryStatus.RESERVED):
    return SpendEntryFactory(
        project=policy.project,
        created_at=at.astimezone(UTC),
        status=status,
        cost_usd=None,
        reserved_usd=Decimal(estimate),
    )


def test_budget_status_counts_spend_after_local_midnight_only(berlin_budget):
    spent(berlin_budget, local(BERLIN, 2026, 6, 15, 23, 30), "1.00")  # yesterday, local
    spent(berlin_budget, local(BERLIN, 2026, 6, 16, 0, 30), "2.00")  # today

    with time_machine.travel(local(BERLIN, 2026, 6, 16, 6), tick=False):
        status = budget_status(berlin_budget, berlin_budget.project_id)

    assert status.spent == Decimal("2.00")
    assert (status.window_start, status.window_end) == (utc(2026, 6, 15, 22), utc(2026, 6, 16, 22))


def test_budget_status_before_midnight_counts_yesterdays_spend(berlin_budget):
    spent(berlin_budget, local(BERLIN, 2026, 6, 15, 23, 30), "1.00")
    spent(berlin_budget, local(BERLIN, 2026, 6, 16, 0, 30), "2.00")  # not yet: in the future

    with time_machine.travel(local(BERLIN, 2026, 6, 15, 23, 45), tick=False):
        status = budget_status(berlin_budget, berlin_budget.project_id)

    assert status.spent == Decimal("1.00")
    assert status.window_end == utc(2026, 6, 15, 22)


def test_budget_status_reports_reserved_remaining_and_projected(berlin_budget):
    spent(berlin_budget, local(BERLIN, 2026, 6, 16, 0, 30), "1.50")
    spent(berlin_budget, local(BERLIN, 2026, 6, 16, 1), "0.50")
    spent(berlin_budget, local(BERLIN, 2026, 6, 16, 2), None)  # unpriced: no dollars to count
    reserved(berlin_budget, local(BERLIN, 2026, 6, 16, 5, 59), "0.50")  # a call in flight
    reserved(berlin_budget, local(BERLIN, 2026, 6, 16, 3), "0.25", status=EntryStatus.EXPIRED)  # a lost worker's
    SpendEntryFactory(created_at=local(BERLIN, 2026, 6, 16, 1).astimezone(UTC), cost_usd=Decimal(5))  # another project

    # Six hours into a 24-hour day with $2.00 spent: $8.00 by midnight at this rate.
    with time_machine.travel(local(BERLIN, 2026, 6, 16, 6), tick=False):
        status = budget_status(berlin_budget, berlin_budget.project_id)

    assert status.amount == Decimal(10)
    assert status.spent == Decimal("2.00")
    assert status.reserved == Decimal("0.75")
    assert status.remaining == Decimal("7.25")
    assert status.projected == Decimal("8.000000")
    assert not status.exhausted


@pytest.mark.django_db
def test_budget_status_projects_over_a_25_hour_day():
    policy = PolicyFactory(config={"amount_usd": 10, "window": "day", "timezone": "America/New_York"})
    spent(policy, local(NEW_YORK, 2026, 11, 1, 1, 30, fold=1), "1.10")  # the second 01:30

    # 10:00 EST is 11 hours into the 25-hour day.
    with time_machine.travel(local(NEW_YORK, 2026, 11, 1, 10), tick=False):
        status = budget_status(policy, policy.project_id)

    assert status.window_end - status.window_start == 25 * HOUR
    assert status.projected == Decimal("2.500000")


@pytest.mark.django_db
def test_budget_status_of_a_rolling_window_projects_what_it_has_spent():
    policy = PolicyFactory(config={"amount_usd": 10, "window": "rolling", "days": 7})
    spent(policy, utc(2026, 6, 1, 12), "4.00")  # older than 7 days
    spent(policy, utc(2026, 6, 9, 12), "3.00")

    with time_machine.travel(utc(2026, 6, 10, 12), tick=False):
        status = budget_status(policy, policy.project_id)

    assert (status.spent, status.projected) == (Decimal("3.00"), Decimal("3.000000"))
    assert status.window_start == utc(2026, 6, 3, 12)


def test_an_exhausted_budget_has_nothing_remaining(berlin_budget):
    spent(berlin_budget, local(BERLIN, 2026, 6, 16, 1), "9.50")
    reserved(berlin_budget, local(BERLIN, 2026, 6, 16, 2), "0.75")

    with time_machine.travel(local(BERLIN, 2026, 6, 16, 6), tick=False):
        status = budget_status(berlin_budget, berlin_budget.project_id)

    assert status.remaining == Decimal(0)
    assert status.exhausted


def test_a_global_budget_counts_each_projects_spend_on_its_own(berlin_budget):
    everywhere = PolicyFactory(project=None, config=berlin_budget.config)
    other = SpendEntryFactory(created_at=local(BERLIN, 2026, 6, 16, 1).astimezone(UTC), cost_usd=Decimal(4))
    spent(berlin_budget, local(BERLIN, 2026, 6, 16, 1), "1.00")

    with time_machine.travel(local(BERLIN, 2026, 6, 16, 6), tick=False):
        mine = budget_status(everywhere, berlin_budget.project_id)
        theirs = budget_status(everywhere, other.project_id)

    assert (mine.spent, theirs.spent) == (Decimal("1.00"), Decimal(4))
