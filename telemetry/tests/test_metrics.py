"""GET /api/v1/metrics: the numbers match the rows, scoped to the caller's projects."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.tests.factories import ApiKeyFactory
from policies.choices import EntryStatus, Outcome, Stage
from policies.models import PolicyDecision, SpendEntry
from projects.tests.factories import MembershipFactory
from runs.choices import RunStatus, StepStatus
from runs.models import Run, RunStep
from runs.tests.factories import bare_run, make_catalog, make_workflow
from sparkops.roles import Role
from sparkops.testing import client_for
from telemetry import histogram, rollups
from telemetry.metrics import percentile

URL = "/api/v1/metrics"
NOW = timezone.now()
LONG_AGO = NOW - timedelta(days=30)


# ------------------------------------------------------------------------------
# Rows to count
# ------------------------------------------------------------------------------
def a_run(workflow, status: str, run_ms: int | None = None, step_ms: int | None = None, queued_at=None) -> Run:
    """A run of ``workflow`` in ``status``; with ``run_ms`` it started and finished that far apart,
    with ``step_ms`` so did its first step."""
    started = NOW - timedelta(hours=1)
    fields = {}
    if run_ms is not None:
        fields = {"started_at": started, "finished_at": started + timedelta(milliseconds=run_ms)}
    run = bare_run(workflow, status=status, **fields)
    if queued_at is not None:
        Run.objects.filter(pk=run.pk).update(queued_at=queued_at)
    if step_ms is not None:
        RunStep.objects.filter(run=run, key="a").update(
            status=StepStatus.SUCCEEDED, started_at=started, finished_at=started + timedelta(milliseconds=step_ms)
        )
    return run


def an_entry(project, *, created_at, agent=None, workflow=None, provider="echo", model="echo-1", **fields):
    return SpendEntry.objects.create(
        project=project,
        agent=agent,
        workflow=workflow,
        provider=provider,
        model=model,
        created_at=created_at,
        **fields,
    )


def settled(project, created_at, agent, workflow, *, tokens: tuple[int, int], cost_usd: str | None, **fields):
    return an_entry(
        project,
        created_at=created_at,
        agent=agent,
        workflow=workflow,
        status=EntryStatus.SETTLED,
        settled_at=created_at,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cost_usd=None if cost_usd is None else Decimal(cost_usd),
        **fields,
    )


def a_decision(project, outcome: str, created_at=None) -> PolicyDecision:
    decision = PolicyDecision.objects.create(project=project, stage=Stage.CALL, outcome=outcome, reason="test")
    if created_at is not None:
        PolicyDecision.objects.filter(pk=decision.pk).update(created_at=created_at)
    return decision


@pytest.fixture
def rows(team):
    """Runs, ledger entries and decisions in the team's project, plus some that must not count: in
    the outsider's project, or older than the default 7 days."""
    catalog = make_catalog(team.project)
    workflow = make_workflow(team.project)
    for run_ms, step_ms in [(1000, 100), (2000, 200), (3000, 300)]:
        a_run(workflow, RunStatus.SUCCEEDED, run_ms, step_ms)
    a_run(workflow, RunStatus.FAILED, 4000, 400)
    a_run(workflow, RunStatus.CANCELLED)  # cancelled before it started: no duration
    a_run(workflow, RunStatus.RUNNING)
    a_run(workflow, RunStatus.QUEUED)
    a_run(workflow, RunStatus.SUCCEEDED, 60_000, 60_000, queued_at=LONG_AGO)

    day1, day2 = NOW - timedelta(days=2), NOW - timedelta(days=1)
    writer, helper = catalog.writer, catalog.helper
    project = team.project
    settled(project, day1, writer, workflow, tokens=(100, 20), cost_usd="0.10", reserved_usd=Decimal("0.50"))
    settled(project, day1, helper, workflow, tokens=(50, 10), cost_usd="0.05")
    an_entry(project, created_at=day1, agent=writer, workflow=workflow, status=EntryStatus.EXPIRED,
             reserved_usd=Decimal("0.02"))  # fmt: skip
    an_entry(project, created_at=day2, agent=writer, workflow=workflow, provider="openai", model="gpt-4o",
             status=EntryStatus.RESERVED, reserved_usd=Decimal("0.30"))  # fmt: skip
    # Unpriced (settled with no cost), from an agent task (no workflow).
    settled(project, day2, helper, None, tokens=(10, 5), cost_usd=None, provider="openai", model="local-model")
    settled(project, LONG_AGO, writer, None, tokens=(1, 1), cost_usd="9")

    for outcome in [Outcome.BLOCKED, Outcome.BLOCKED, Outcome.WARNED, Outcome.QUEUED]:
        a_decision(team.project, outcome)
    a_decision(team.project, Outcome.BLOCKED, created_at=LONG_AGO)

    make_catalog(team.other_project)
    other = make_workflow(team.other_project, slug="theirs")
    a_run(other, RunStatus.FAILED, 9000, 900)
    settled(team.other_project, day2, None, None, tokens=(0, 0), cost_usd="7")
    a_decision(team.other_project, Outcome.WARNED)
    return {"workflow": workflow, "writer": writer, "helper": helper, "day1": day1, "day2": day2}


def near(ms: float):
    return pytest.approx(ms, rel=histogram.TOLERANCE)


def get(client, **params):
    return client.get(URL, params)


def figures(cost: str, input_tokens: int, output_tokens: int, calls: int, unpriced: int = 0) -> dict:
    return {
        "cost_usd": cost,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "tokens": input_tokens + output_tokens,
        "calls": calls,
        "unpriced_calls": unpriced,
    }


# ------------------------------------------------------------------------------
# The numbers
# ------------------------------------------------------------------------------
def test_it_counts_runs_by_status_with_the_success_rate_and_duration_percentiles(team, rows):
    response = get(team.client("viewer"), project=str(team.project.pk))

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["project"] == str(team.project.pk)
    assert body["runs"]["total"] == 7
    assert body["runs"]["by_status"] == {
        "queued": 1,
        "running": 1,
        "waiting_approval": 0,
        "succeeded": 3,
        "failed": 1,
        "cancelling": 0,
        "cancelled": 1,
    }
    assert body["runs"]["success_rate"] == 0.6  # 3 of the 5 that finished
    # 1, 2, 3 and 4 s: the median halfway between 2 and 3 s, p95 85% of the way from 3 to 4 s, read
    # from histograms: within their documented tolerance.
    assert body["runs"]["duration_ms"] == {"p50": near(2500), "p95": near(3850), "count": 4, "sampled": False}
    assert body["steps"]["duration_ms"] == {"p50": near(250), "p95": near(385), "count": 4, "sampled": False}


def test_it_sums_spend_and_tokens_by_day_agent_model_and_workflow(team, rows):
    body = get(team.client("viewer"), project=str(team.project.pk)).json()
    spend = body["spend"]

    # Settled entries count their cost, the reservation and the expired estimate their estimate.
    assert spend["total"] == figures("0.470000", 160, 35, 5, unpriced=1)
    assert spend["by_day"] == [
        {"day": rows["day1"].astimezone(UTC).date().isoformat(), **figures("0.170000", 150, 30, 3)},
        {"day": rows["day2"].astimezone(UTC).date().isoformat(), **figures("0.300000", 10, 5, 2, unpriced=1)},
    ]
    writer, helper = rows["writer"], rows["helper"]
    assert spend["by_agent"] == [
        {"agent": str(writer.pk), "slug": "writer", **figures("0.420000", 100, 20, 3)},
        {"agent": str(helper.pk), "slug": "helper", **figures("0.050000", 60, 15, 2, unpriced=1)},
    ]
    assert spend["by_model"] == [
        {"provider": "openai", "model": "gpt-4o", **figures("0.300000", 0, 0, 1)},
        {"provider": "echo", "model": "echo-1", **figures("0.170000", 150, 30, 3)},
        {"provider": "openai", "model": "local-model", **figures("0.000000", 10, 5, 1, unpriced=1)},
    ]
    by_workflow = {row["slug"]: row for row in spend["by_workflow"]}
    assert by_workflow == {
        "wf": {"workflow": str(rows["workflow"].pk), "slug": "wf", **figures("0.470000", 150, 30, 4)},
        None: {"workflow": None, "slug": None, **figures("0.000000", 10, 5, 1, unpriced=1)},
    }


def test_it_counts_policy_decisions_by_outcome(team, rows):
    body = get(team.client("viewer"), project=str(team.project.pk)).json()

    assert body["policy_decisions"]["by_outcome"] == {
        "blocked": 2,
        "warned": 1,
        "queued": 1,
        "approval_required": 0,
        "overridden": 0,
    }


def test_with_nothing_to_count_it_answers_zeros_and_no_percentiles(team):
    body = get(team.client("viewer")).json()

    assert body["project"] is None
    assert body["runs"]["total"] == 0
    assert body["runs"]["success_rate"] is None
    assert body["runs"]["duration_ms"] == {"p50": None, "p95": None, "count": 0, "sampled": False}
    assert body["spend"]["total"] == figures("0.000000", 0, 0, 0)
    assert body["spend"]["by_day"] == []


def test_percentiles_interpolate_between_ranks_like_postgresql_percentile_cont():
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([float(n) for n in range(1, 101)], 0.95) == 95.05


# ------------------------------------------------------------------------------
# The span
# ------------------------------------------------------------------------------
def test_since_defaults_to_seven_days_ago(team, rows):
    body = get(team.client("viewer"), project=str(team.project.pk)).json()

    since = datetime.fromisoformat(body["since"])
    until = datetime.fromisoformat(body["until"])
    assert timedelta(days=7) - timedelta(seconds=5) < until - since <= timedelta(days=7)


def test_since_a_date_counts_from_that_days_utc_midnight(team, rows):
    day2 = rows["day2"].astimezone(UTC).date()

    body = get(team.client("viewer"), project=str(team.project.pk), since=day2.isoformat()).json()

    assert datetime.fromisoformat(body["since"]) == datetime(day2.year, day2.month, day2.day, tzinfo=UTC)
    assert body["spend"]["total"] == figures("0.300000", 10, 5, 2, unpriced=1)
    assert [row["day"] for row in body["spend"]["by_day"]] == [day2.isoformat()]


def test_since_a_date_time_reaches_back_past_the_default(team, rows):
    since = (LONG_AGO - timedelta(hours=1)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    body = get(team.client("viewer"), project=str(team.project.pk), since=since).json()

    assert body["runs"]["total"] == 8
    assert body["runs"]["duration_ms"]["count"] == 5
    assert body["spend"]["total"]["calls"] == 6
    assert body["policy_decisions"]["by_outcome"]["blocked"] == 3


@pytest.mark.parametrize("since", ["last week", "2026-02-30", "2026-13-01T00:00:00Z"])
def test_a_bad_since_is_refused_with_a_message_on_the_field(team, since):
    response = get(team.client("viewer"), since=since)

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert body["errors"]["since"] == ["Enter an ISO 8601 date or date-time, e.g. 2026-11-01 or 2026-11-01T09:30:00Z."]


# ------------------------------------------------------------------------------
# Who sees what
# ------------------------------------------------------------------------------
def test_without_a_project_it_counts_every_project_of_the_caller(team, rows):
    viewer = team.members[Role.VIEWER]
    MembershipFactory(user=viewer, project=team.other_project, role=Role.VIEWER)

    body = get(client_for(viewer)).json()

    assert body["runs"]["total"] == 8
    assert body["runs"]["by_status"]["failed"] == 2
    assert body["spend"]["total"]["cost_usd"] == "7.470000"
    assert body["policy_decisions"]["by_outcome"]["warned"] == 2


def test_an_outsider_sees_only_their_own_project(team, rows):
    body = get(team.client("outsider")).json()

    assert body["runs"]["total"] == 1
    assert body["spend"]["total"]["cost_usd"] == "7.000000"


@pytest.mark.parametrize("who", ["outsider", "viewer"])
def test_a_project_the_caller_is_not_in_reads_as_not_existing(team, rows, who):
    project = team.project if who == "outsider" else team.other_project

    response = get(team.client(who), project=str(project.pk))

    assert response.status_code == 404
    assert response.json()["message"] == "No such project."


@pytest.mark.parametrize("project", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
def test_an_unknown_project_reads_as_not_existing(team, project):
    assert get(team.client("viewer"), project=project).status_code == 404


def test_an_api_key_reads_the_metrics_of_its_project(team, rows):
    key = ApiKeyFactory(project=team.project, created_by=team.members[Role.DEVELOPER], role=Role.VIEWER)

    response = get(client_for(api_key=key.raw))

    assert response.status_code == 200
    assert response.json()["runs"]["total"] == 7


def test_an_api_key_cannot_read_another_project_of_its_creator(team, rows):
    creator = team.members[Role.DEVELOPER]
    MembershipFactory(user=creator, project=team.other_project, role=Role.OWNER)
    key = ApiKeyFactory(project=team.project, created_by=creator, role=Role.VIEWER)

    assert get(client_for(api_key=key.raw), project=str(team.other_project.pk)).status_code == 404
    assert get(client_for(api_key=key.raw)).json()["runs"]["total"] == 7


def test_it_needs_credentials(api_client):
    assert get(api_client).status_code == 401


# ------------------------------------------------------------------------------
# Cost
# ------------------------------------------------------------------------------
def test_the_query_count_does_not_grow_with_the_rows(team, rows, django_assert_max_num_queries):
    viewer = team.members[Role.VIEWER]
    MembershipFactory(user=viewer, project=team.other_project, role=Role.VIEWER)
    workflow = rows["workflow"]
    for n in range(20):
        a_run(workflow, RunStatus.SUCCEEDED, 1000 + n, 10 + n)
        settled(team.project, NOW, rows["writer"], workflow, tokens=(1, 1), cost_usd="0.01", model=f"m{n}")
    client = client_for(viewer)
    rollups.roll()

    # Authentication, the caller's projects, the roll-ups' state, rows and pending runs, the live
    # runs and their steps, four spend groupings (the total is added up from the days), decisions.
    with django_assert_max_num_queries(12):
        response = get(client)

    assert response.status_code == 200
    assert response.json()["runs"]["total"] == 28
