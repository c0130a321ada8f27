"""Retention: what is past its project's (or the global) retention goes, in batches; a dry run
says what would go and writes nothing; the spend ledger stays, and so does any run whose spend is
inside an open budget window."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

from accounts.tasks import flush_expired_tokens
from accounts.tests.factories import UserFactory
from policies.models import PolicyDecision, SpendEntry
from policies.tests.factories import PolicyDecisionFactory, PolicyFactory, SpendEntryFactory
from runs.choices import EventType, RunStatus
from runs.engine.transitions import emit
from runs.models import Run, RunEvent
from runs.tests.factories import bare_run
from schedules import retention
from schedules import services as schedule_services
from schedules.choices import FireOutcome
from schedules.models import Schedule, ScheduleFire
from schedules.tests.factories import published_workflow
from sparkops.celery import app

pytestmark = pytest.mark.django_db
NOW = timezone.now()
OLD = NOW - timedelta(days=400)


@pytest.fixture
def workflow(team):
    return published_workflow(team.project)


def hourly(project, workflow) -> Schedule:
    made = Schedule(project=project, workflow=workflow, name="Hourly", cron="0 * * * *", inputs={"topic": "x"})
    return schedule_services.schedule_save(schedule=made)


def finished_run(workflow, at=OLD, status=RunStatus.SUCCEEDED) -> Run:
    run = bare_run(workflow, inputs={"topic": "x"}, status=status)
    Run.objects.filter(pk=run.pk).update(finished_at=at)
    return run


def old_events(run: Run, count: int, at=OLD) -> None:
    for _ in range(count):
        emit(run.pk, EventType.RUN_QUEUED)
    RunEvent.objects.filter(run=run).update(created_at=at)


def test_old_events_of_finished_runs_go_in_batches_and_the_rest_stays(team, workflow):
    done, active, recent = finished_run(workflow), bare_run(workflow, inputs={"topic": "x"}), finished_run(workflow)
    old_events(done, 5)
    old_events(active, 2)  # an active run's events are never history
    old_events(recent, 1, at=NOW - timedelta(days=1))
    batches = []

    report = retention.prune(batch_size=2, on_batch=lambda kind, rows: batches.append((kind, rows)))

    assert [rows for kind, rows in batches if kind == "run_events"] == [2, 2, 1]
    assert [(line.kind, line.rows) for line in report] == [("run_events", 5)]
    assert set(RunEvent.objects.values_list("run_id", flat=True)) == {active.pk, recent.pk}


def test_a_dry_run_says_what_would_go_per_kind_and_project_and_writes_nothing(team, workflow, capsys):
    done = finished_run(workflow)
    old_events(done, 3)
    fire = ScheduleFire.objects.create(
        schedule=hourly(team.project, workflow), nominal_time=OLD, outcome=FireOutcome.STARTED
    )
    ScheduleFire.objects.filter(pk=fire.pk).update(created_at=OLD)
    decision = PolicyDecisionFactory(policy=PolicyFactory(project=team.project))
    PolicyDecision.objects.filter(pk=decision.pk).update(created_at=OLD)
    before = RunEvent.objects.count(), ScheduleFire.objects.count(), PolicyDecision.objects.count()

    call_command("prune", "--dry-run")

    out = capsys.readouterr().out
    slug = team.project.slug
    assert f"{slug}: would delete 3 run events" in out
    assert f"{slug}: would delete 1 schedule fires" in out
    assert f"{slug}: would delete 1 policy decisions" in out
    assert "finished runs" not in out  # kept forever by default
    assert (RunEvent.objects.count(), ScheduleFire.objects.count(), PolicyDecision.objects.count()) == before

    call_command("prune")
    assert (RunEvent.objects.count(), ScheduleFire.objects.count(), PolicyDecision.objects.count()) == (0, 0, 0)


def test_a_projects_own_retention_beats_the_global_default(team, workflow, settings):
    settings.SPARKOPS_RETENTION_DAYS = {**settings.SPARKOPS_RETENTION_DAYS, "run_events": 0}
    done = finished_run(workflow)
    old_events(done, 2, at=NOW - timedelta(days=10))
    assert retention.prune() == []  # 0: kept forever
    team.project.run_events_retention_days = 7
    team.project.save()
    assert [(line.kind, line.rows) for line in retention.prune()] == [("run_events", 2)]


def test_finished_runs_go_but_the_ledger_stays_and_open_window_spend_keeps_its_run(team, workflow):
    team.project.finished_runs_retention_days = 30
    team.project.save()
    PolicyFactory(project=team.project)  # a daily budget: today's window is open
    unspent, closed, open_ = finished_run(workflow), finished_run(workflow), finished_run(workflow)
    in_flight = finished_run(workflow, status=RunStatus.FAILED)
    closed_entry = SpendEntryFactory(project=team.project, run=closed, created_at=NOW - timedelta(days=60))
    open_entry = SpendEntryFactory(project=team.project, run=open_)  # spent today (a long-finished run, retried)
    SpendEntryFactory(project=team.project, run=in_flight, status="reserved", cost_usd=None, created_at=OLD)
    recent = finished_run(workflow, at=NOW - timedelta(days=2))
    ledger = SpendEntry.objects.count()

    report = retention.prune(batch_size=1)

    assert [(line.kind, line.rows) for line in report] == [("finished_runs", 2)]
    assert set(Run.objects.values_list("pk", flat=True)) == {open_.pk, in_flight.pk, recent.pk}
    assert not Run.objects.filter(pk__in=[unspent.pk, closed.pk]).exists()
    assert SpendEntry.objects.count() == ledger  # never pruned
    closed_entry.refresh_from_db()
    open_entry.refresh_from_db()
    assert (closed_entry.run_id, open_entry.run_id) == (None, open_.pk)


def test_the_nightly_jobs_are_beat_entries_of_registered_tasks(settings):
    for name in ("retention-prune", "auth-flush-expired-tokens"):
        assert settings.CELERY_BEAT_SCHEDULE[name]["task"] in app.tasks


def test_expired_refresh_tokens_are_flushed(db):
    user = UserFactory()
    expired = OutstandingToken.objects.create(user=user, jti="a", token="t1", expires_at=NOW - timedelta(days=1))
    live = OutstandingToken.objects.create(user=user, jti="b", token="t2", expires_at=NOW + timedelta(days=1))
    flush_expired_tokens()
    assert list(OutstandingToken.objects.values_list("pk", flat=True)) == [live.pk]
    assert not OutstandingToken.objects.filter(pk=expired.pk).exists()


def test_admins_set_a_projects_retention_and_zero_is_refused(team):
    url = f"/api/v1/projects/{team.project.pk}"
    admin = team.client("admin")
    assert admin.patch(url, {"finished_runs_retention_days": 30}, format="json").status_code == 200
    team.project.refresh_from_db()
    assert retention.retention_days(team.project, "finished_runs") == 30
    refused = admin.patch(url, {"run_events_retention_days": 0}, format="json")
    assert refused.status_code == 400
    assert "run_events_retention_days" in refused.json()["errors"]
    assert team.client("developer").patch(url, {"run_events_retention_days": 5}, format="json").status_code == 403
