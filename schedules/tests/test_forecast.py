"""Schedule forecasts: fires counted from our cron in the schedule's timezone across a DST change
and a month boundary, spend per run and per period, and a warning (never a refusal) with the
moment a budget would run out."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from policies.tests.factories import PolicyFactory, SpendEntryFactory
from runs.tests.factories import echo_price
from schedules import forecast, services
from schedules.models import Schedule
from schedules.tests.factories import published_workflow
from sparkops.roles import Role


@pytest.fixture
def workflow(team):
    echo_price()
    return published_workflow(team.project)


def schedule_of(team, workflow, cron: str = "0 9 * * *", tz: str = "UTC", **fields) -> Schedule:
    schedule = Schedule(
        project=team.project, workflow=workflow, name=f"s{cron}{tz}", cron=cron, timezone=tz, inputs={"topic": "t"}
    )
    for name, value in fields.items():
        setattr(schedule, name, value)
    return services.schedule_save(schedule=schedule)


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_week_across_the_spring_change_has_seven_daily_fires_at_local_nine(team, workflow):
    schedule = schedule_of(team, workflow, tz="Europe/Berlin")

    found = forecast.schedule_forecast(schedule=schedule, period="week", now=at(2026, 3, 25, 12))

    assert found["fires"] == 7
    fires = forecast.fires_between(schedule, at(2026, 3, 25, 12), at(2026, 4, 1, 11))
    assert fires[2] == at(2026, 3, 28, 8)  # 09:00 CET
    assert fires[3] == at(2026, 3, 29, 7)  # 09:00 CEST: the clocks moved, the fire did not
    assert found["end"] == "2026-04-01T11:00:00+00:00"  # 13:00 local a week on: 167 hours later


def test_a_day_across_a_skipped_hour_fires_the_missing_slot_once(team, workflow):
    schedule = schedule_of(team, workflow, cron="30 * * * *", tz="America/New_York")

    found = forecast.schedule_forecast(schedule=schedule, period="day", now=at(2026, 3, 8, 5))

    # Midnight to midnight local on the day that skips 02:00-03:00: 23 hours, 23 half-past fires.
    assert found["end"] == "2026-03-09T04:00:00+00:00"
    assert found["fires"] == 23


def test_a_month_from_the_thirty_first_ends_on_the_last_day_of_february(team, workflow):
    schedule = schedule_of(team, workflow)

    found = forecast.schedule_forecast(schedule=schedule, period="month", now=at(2026, 1, 31, 10))
    mid = forecast.schedule_forecast(schedule=schedule, period="month", now=at(2026, 1, 15, 10))

    assert found["end"] == "2026-02-28T10:00:00+00:00"
    assert found["fires"] == 28
    assert mid["fires"] == 31  # 16 January to 15 February


def test_spend_is_fires_times_the_per_run_cost(team, workflow):
    schedule = schedule_of(team, workflow, cron="0 * * * *")

    found = forecast.schedule_forecast(schedule=schedule, period="day", now=at(2026, 6, 1, 0, 30))

    per_run = Decimal(found["per_run"]["worst_case_usd"])
    assert found["fires"] == 24
    assert per_run > 0
    assert Decimal(found["spend"]["worst_case_usd"]) == per_run * 24
    assert found["per_run"]["expected_from_history"] is False
    assert found["budgets"] == []
    assert found["warnings"] == []


def test_it_warns_when_a_budget_would_run_out_and_says_when(team, workflow):
    schedule = schedule_of(team, workflow, cron="0 * * * *")
    now = at(2026, 6, 1, 0, 30)
    per_run = Decimal(forecast.schedule_forecast(schedule=schedule, period="day", now=now)["per_run"]["expected_usd"])
    amount = (per_run * Decimal("3.5")).quantize(Decimal("0.000001"))
    budget = PolicyFactory(project=team.project, name="daily", config={"amount_usd": float(amount), "window": "day"})
    PolicyFactory(project=team.project, name="elsewhere", config={"amount_usd": 1, "window": "day", "agent": "other"})
    SpendEntryFactory(project=team.project, cost_usd=per_run, created_at=now)  # already used today

    found = forecast.schedule_forecast(schedule=schedule, period="day", now=now)

    [row] = found["budgets"]
    assert row["policy"] == budget.pk
    # Used: one run's worth; the fires at 01:00, 02:00 and 03:00 bring it to 4 of 3.5.
    assert row["runs_out_at"] == "2026-06-01T03:00:00+00:00"
    assert row["windows"][0]["fires"] == 23
    assert Decimal(row["windows"][0]["used_usd"]) == per_run
    assert Decimal(row["windows"][0]["projected_expected_usd"]) == per_run * 24
    assert row["windows"][1]["fires"] == 1  # the 00:00 fire of the next day, a fresh window
    assert found["warnings"] == [
        f"Budget 'daily' (${amount.normalize()} a day window) would run out on 2026-06-01 03:00 UTC with this "
        "schedule's runs; later runs would be refused."
    ]


def test_a_rolling_budget_counts_the_fires_inside_its_window(team, workflow):
    schedule = schedule_of(team, workflow, cron="0 0 * * *")
    per_run = Decimal(
        forecast.schedule_forecast(schedule=schedule, period="month", now=at(2026, 6, 1))["per_run"]["expected_usd"]
    )
    config = {"amount_usd": float(per_run * 5), "window": "rolling", "days": 7}
    PolicyFactory(project=team.project, name="week", config=config)

    [row] = forecast.schedule_forecast(schedule=schedule, period="month", now=at(2026, 6, 1))["budgets"]

    assert row["windows"][0]["fires"] == 7
    assert row["runs_out_at"] == "2026-06-06T00:00:00+00:00"  # the fifth daily fire


# ------------------------------------------------------------------------------
# The API
# ------------------------------------------------------------------------------
def test_get_forecast_answers_for_each_period_and_refuses_others(team, workflow):
    schedule = schedule_of(team, workflow)
    client = team.client(Role.VIEWER)

    week = client.get(f"/api/v1/schedules/{schedule.pk}/forecast", {"period": "week"})
    bad = client.get(f"/api/v1/schedules/{schedule.pk}/forecast", {"period": "year"})
    outsider = team.client("outsider").get(f"/api/v1/schedules/{schedule.pk}/forecast")

    assert week.status_code == 200
    assert week.json()["fires"] == 7
    assert bad.status_code == 400
    assert "period" in bad.json()["errors"]
    assert outsider.status_code == 404


def test_creating_a_schedule_that_would_exhaust_a_budget_warns_and_still_creates_it(team, workflow):
    PolicyFactory(project=team.project, name="tiny", config={"amount_usd": 0.000001, "window": "month"})
    body = {"project": str(team.project.pk), "workflow": str(workflow.pk), "name": "Hourly", "cron": "0 * * * *",
            "inputs": {"topic": "t"}}  # fmt: skip

    response = team.client(Role.ADMIN).post("/api/v1/schedules?period=week", body, format="json")

    assert response.status_code == 201, response.content
    found = response.json()["forecast"]
    assert found["period"] == "week"
    assert found["fires"] >= 167
    assert "'tiny'" in found["warnings"][0]
    assert Schedule.objects.filter(name="Hourly", enabled=True).exists()


def test_resume_and_edits_answer_with_the_forecast_and_a_disabled_schedule_has_none(team, workflow):
    schedule = schedule_of(team, workflow, enabled=False)
    client = team.client(Role.ADMIN)

    paused = client.patch(f"/api/v1/schedules/{schedule.pk}", {"name": "Still off"}, format="json")
    resumed = client.post(f"/api/v1/schedules/{schedule.pk}/resume?period=day")

    assert paused.json()["forecast"] is None
    assert resumed.status_code == 200
    assert resumed.json()["forecast"]["fires"] == 1
    assert resumed.json()["forecast"]["start"] <= timezone.now().isoformat()
