"""Hourly roll-ups: metrics and the dashboard's charts answer from rollups + live exactly as from a
scan of the raw rows, before and after a tick, with runs finishing late into rolled hours, ticks
repeated, runs pruned, and a backfill."""

import random
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import Count
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from runs.choices import RunStatus, StepStatus
from runs.models import Run, RunStep
from runs.tests.factories import bare_run, make_catalog, make_workflow
from schedules import retention
from sparkops.celery import app as celery_app
from telemetry import histogram, rollups, tasks
from telemetry.dashboard import charts
from telemetry.metrics import percentile, project_metrics
from telemetry.models import RollupPending, RollupState, RunHourlyRollup

NOW = timezone.now()
STATUSES = [RunStatus.SUCCEEDED, RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.RUNNING]


def a_run(workflow, status, queued_at, run_ms=None, step_ms=None):
    run = bare_run(workflow, status=status)
    fields = {"queued_at": queued_at}
    if run_ms is not None:
        fields |= {"started_at": queued_at, "finished_at": queued_at + timedelta(milliseconds=run_ms)}
    Run.objects.filter(pk=run.pk).update(**fields)
    if step_ms is not None:
        RunStep.objects.filter(run=run, key="a").update(
            status=StepStatus.SUCCEEDED, started_at=queued_at, finished_at=queued_at + timedelta(milliseconds=step_ms)
        )
    return run


@pytest.fixture
def spread(team):
    """Runs of two projects over the last 30 hours (three hours running, two with no start), the
    newest in the open hour."""
    rng = random.Random(12)
    workflows = []
    for project in (team.project, team.other_project):
        make_catalog(project)
        workflows.append(make_workflow(project))
    for n in range(60):
        status = STATUSES[n % len(STATUSES)]
        queued_at = NOW - timedelta(minutes=30 * n + rng.randint(0, 29))
        finished = status != RunStatus.RUNNING and n % 11
        a_run(
            workflows[n % 2], status, queued_at,
            run_ms=rng.randint(50, 90_000) if finished else None,
            step_ms=rng.randint(5, 5_000) if finished else None,
        )  # fmt: skip
    a_run(workflows[0], RunStatus.QUEUED, NOW - timedelta(hours=20))
    return workflows


def projects(team):
    return [team.project.pk, team.other_project.pk]


def raw(project_ids, since, now) -> dict:
    """What metrics must say, from a scan of every row: counts by status, exact durations."""
    runs = Run.objects.filter(project_id__in=project_ids, queued_at__gte=since, queued_at__lt=now)
    steps = RunStep.objects.filter(run__in=runs, started_at__isnull=False, finished_at__isnull=False)
    by_status = dict.fromkeys(RunStatus.values, 0) | dict(runs.order_by().values_list("status").annotate(Count("pk")))
    timed = runs.filter(started_at__isnull=False, finished_at__isnull=False)
    return {
        "by_status": by_status,
        "runs": sorted((f - s).total_seconds() * 1000 for s, f in timed.values_list("started_at", "finished_at")),
        "steps": sorted((f - s).total_seconds() * 1000 for s, f in steps.values_list("started_at", "finished_at")),
    }


def assert_agrees(answer: dict, scan: dict) -> None:
    """Counts exactly; percentiles within the histograms' stated tolerance of the exact ones."""
    assert answer["runs"]["by_status"] == scan["by_status"]
    for kind in ("runs", "steps"):
        stats = answer[kind]["duration_ms"]
        assert stats["count"] == len(scan[kind])
        for key, fraction in (("p50", 0.5), ("p95", 0.95)):
            exact = percentile(scan[kind], fraction)
            assert stats[key] == pytest.approx(exact, rel=histogram.TOLERANCE, abs=1), (kind, key)


def test_metrics_read_the_same_from_rollups_and_live_as_from_the_raw_rows(team, spread):
    ids, since = projects(team), NOW - timedelta(days=2)
    before = project_metrics(ids, since, NOW)
    assert_agrees(before, raw(ids, since, NOW))

    rolled = rollups.roll(now=NOW)

    assert rolled.hours >= 30
    assert RunHourlyRollup.objects.exists()
    after = project_metrics(ids, since, NOW)
    assert after["runs"] == before["runs"]
    assert after["steps"] == before["steps"]
    # A window starting mid-hour inside the rolled hours reads that hour's part live.
    for start in (NOW - timedelta(hours=7, minutes=13), NOW - timedelta(hours=40)):
        assert_agrees(project_metrics(ids, start, NOW), raw(ids, start, NOW))


def test_a_run_finishing_late_into_a_rolled_hour_counts_at_once_and_once(team, spread):
    ids, since = projects(team), NOW - timedelta(days=2)
    rollups.roll(now=NOW)
    late = Run.objects.filter(status=RunStatus.RUNNING, queued_at__lt=NOW - timedelta(hours=10)).first()
    assert RollupPending.objects.filter(run=late).exists()

    Run.objects.filter(pk=late.pk).update(
        status=RunStatus.SUCCEEDED, started_at=NOW, finished_at=NOW + timedelta(seconds=3)
    )
    live = project_metrics(ids, since, NOW)
    assert_agrees(live, raw(ids, since, NOW))

    later = NOW + timedelta(minutes=5)
    assert rollups.roll(now=later).pending_counted == 1
    assert not RollupPending.objects.filter(run=late).exists()
    # Ticks again and again: nothing doubles.
    rollups.roll(now=later)
    rollups.roll(now=later + timedelta(hours=1))
    assert project_metrics(ids, since, NOW)["runs"] == live["runs"]
    assert_agrees(project_metrics(ids, since, NOW), raw(ids, since, NOW))


def test_the_dashboard_charts_are_the_same_before_and_after_a_tick(team, spread):
    ids = projects(team)
    before = charts(ids, NOW)

    rollups.roll(now=NOW)

    assert charts(ids, NOW) == before
    assert sum(sum(series) for series in before["runs_7d"]["series"].values()) == Run.objects.count()
    scan = raw(ids, NOW - timedelta(days=7), NOW)
    assert before["durations"]["week"]["count"] == len(scan["runs"])
    assert before["durations"]["week"]["p95"] * 1000 == pytest.approx(
        percentile(scan["runs"], 0.95), rel=histogram.TOLERANCE
    )


def test_pruned_runs_stay_counted_in_their_rolled_hours(team, spread):
    ids, since = projects(team), NOW - timedelta(days=2)
    rollups.roll(now=NOW)
    counted = project_metrics(ids, since, NOW)
    for project in (team.project, team.other_project):
        project.finished_runs_retention_days = 1
        project.save()

    pruned = retention.prune(now=NOW + timedelta(hours=8))
    rollups.roll(now=NOW + timedelta(hours=8))

    assert sum(line.rows for line in pruned if line.kind == "finished_runs") > 0
    assert project_metrics(ids, since, NOW)["runs"] == counted["runs"]
    assert project_metrics(ids, since, NOW)["steps"] == counted["steps"]


def test_the_command_backfills_hours_before_the_first_tick(team, spread):
    ids, since = projects(team), NOW - timedelta(days=30)
    a_run(spread[0], RunStatus.FAILED, NOW - timedelta(days=20), run_ms=700, step_ms=70)
    rollups.roll(now=NOW)
    assert RollupState.objects.get().rolled_from > since

    call_command("rollup_runs", since=(NOW - timedelta(days=25)).date().isoformat())

    state = RollupState.objects.get()
    assert state.rolled_from == rollups.hour_of(NOW - timedelta(days=25)).replace(hour=0)
    assert RunHourlyRollup.objects.filter(hour__lt=NOW - timedelta(days=19)).get().runs == 1
    assert_agrees(project_metrics(ids, since, NOW), raw(ids, since, NOW))


def test_the_command_refuses_a_bad_date(db):
    with pytest.raises(CommandError, match="ISO 8601"):
        call_command("rollup_runs", since="last tuesday")


def test_beat_rolls_up_every_few_minutes(team, spread):
    assert settings.CELERY_BEAT_SCHEDULE["telemetry-roll-up"]["task"] == "telemetry.roll_up"
    assert celery_app.tasks["telemetry.roll_up"].run.__module__ == "telemetry.tasks"
    tasks.roll_up()
    assert RollupState.objects.get().rolled_until == rollups.hour_of(timezone.now() - rollups.SEAL_DELAY)


def test_a_window_costs_five_queries_however_many_hours_and_runs(team, spread):
    rollups.roll(now=NOW)
    with CaptureQueriesContext(connection) as few:
        rollups.window(projects(team), NOW - timedelta(days=2), NOW)
    for n in range(10):
        a_run(spread[0], RunStatus.SUCCEEDED, NOW - timedelta(hours=n, minutes=1), run_ms=10, step_ms=1)
    rollups.roll(now=NOW)
    with CaptureQueriesContext(connection) as many:
        rollups.window(projects(team), NOW - timedelta(days=2), NOW)
    # The state, the rows, the pending runs' ids, the live runs, their steps.
    assert len(few) == len(many) == 5


def test_histogram_percentiles_are_within_the_stated_tolerance():
    rng = random.Random(7)
    for _ in range(20):
        values = sorted(rng.lognormvariate(6, 2) + 1 for _ in range(rng.randint(1, 400)))
        counts: dict = {}
        for value in values:
            histogram.add(counts, value)
        for fraction in (0.5, 0.95):
            assert histogram.percentile(counts, fraction) == pytest.approx(
                percentile(values, fraction), rel=histogram.TOLERANCE
            )
    assert histogram.percentile({}, 0.5) is None
