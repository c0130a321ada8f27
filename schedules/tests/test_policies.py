"""Policies refusing a schedule's fire: the fire is recorded as blocked, with the decision."""

from datetime import UTC, datetime

import pytest
import time_machine

from policies.choices import Outcome, PolicyKind, Stage
from policies.models import PolicyDecision
from policies.tests.factories import SpendEntryFactory
from runs.models import Run
from runs.tests.factories import start, stocked
from runs.tests.test_policies_engine import USD, budget, decisions, make_policy, one_step
from schedules import services as schedule_services
from schedules.choices import FireOutcome, OverlapPolicy
from schedules.models import Schedule


@pytest.fixture
def project(engine, team):
    """The team's project with the echo price, a read-only calc tool and two echo agents."""
    return stocked(team.project)


def test_a_schedule_fire_refused_by_a_policy_is_recorded_as_blocked(team, project):
    daily = budget(project, 0.01)
    SpendEntryFactory(project=project, cost_usd=USD("0.01"))
    schedule = schedule_services.schedule_save(
        schedule=Schedule(
            project=project,
            workflow=one_step(project),
            name="Hourly",
            cron="0 * * * *",
            timezone="UTC",
            inputs={"name": "Ada"},
            overlap_policy=OverlapPolicy.ALLOW,
        )
    )

    fire = schedule_services.trigger(schedule=schedule)

    assert fire.outcome == FireOutcome.BLOCKED
    assert fire.reason.startswith("Budget 'Daily' is exhausted")
    assert fire.run is None
    assert not Run.objects.exists()
    (decision,) = PolicyDecision.objects.all()
    assert (decision.policy, decision.stage, decision.outcome) == (daily, Stage.ADMISSION, Outcome.BLOCKED)
    assert decision.reason == fire.reason


def test_a_schedule_fire_on_the_clock_refused_by_a_rate_limit_is_blocked(team, project):
    make_policy(project, PolicyKind.RATE_LIMIT, {"max_runs": 1, "per": "hour"})
    workflow = one_step(project)
    t0 = datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)
    with time_machine.travel(t0, tick=False) as clock:
        start(workflow)
        schedule = schedule_services.schedule_save(
            schedule=Schedule(
                project=project,
                workflow=workflow,
                name="Every minute",
                cron="* * * * *",
                timezone="UTC",
                inputs={"name": "Ada"},
                overlap_policy=OverlapPolicy.ALLOW,
            )
        )
        clock.shift(40)
        fire = schedule_services.fire(schedule_id=schedule.pk)

    assert (fire.outcome, fire.nominal_time) == (FireOutcome.BLOCKED, datetime(2026, 6, 1, 12, 1, tzinfo=UTC))
    assert fire.reason == "Rate limit 'Guard': the project started 1 runs in the last hour; the limit is 1."
    assert decisions() == [("Guard", Stage.ADMISSION, Outcome.BLOCKED, None)]
