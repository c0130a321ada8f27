"""schedules/services.py: validation, the django-celery-beat sync, and the fire ledger with its
overlap, catch-up, auto-pause and jitter rules, across daylight saving time.

"Beat" is simulated by calling the beat task (schedules.tasks.schedule_fire, named
runs.schedule_fire) or services.fire() at chosen instants; runs stay "active" because these tests
never run the engine (on_commit callbacks do not run inside a test transaction), and "finish" by
having their status set.
"""

import json
import threading
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
from celery.signals import task_prerun
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.test import Client
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask, PeriodicTasks
from prometheus_client.parser import text_string_to_metric_families

from projects.models import Project
from runs.choices import RunStatus, Trigger
from runs.models import Run
from schedules import services, tasks
from schedules.choices import CatchupPolicy, FireOutcome, OverlapPolicy
from schedules.models import Schedule, ScheduleFire
from schedules.tests.factories import INPUT_SCHEMA, published_workflow
from sparkops.celery import app as celery_app
from workflows.services import version_publish, workflow_create, workflow_delete, workflow_update

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
# A Monday morning; an hourly schedule created now first fires at 08:00 UTC.
T0 = datetime(2026, 5, 4, 7, 50, tzinfo=UTC)
SLOT = datetime(2026, 5, 4, 8, tzinfo=UTC)
HOUR = timedelta(hours=1)
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
FIRE_TASK = "runs.schedule_fire"
# Version 2 of the workflow: one more optional input.
SECOND_SCHEMA = {**INPUT_SCHEMA, "properties": {**INPUT_SCHEMA["properties"], "tone": {"type": "string"}}}
ON_POSTGRESQL = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


# ------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------
def unsaved(workflow, **fields) -> Schedule:
    values = {
        "name": "Digest",
        "cron": "0 * * * *",
        "timezone": "UTC",
        "inputs": {"topic": "news"},
        "overlap_policy": OverlapPolicy.ALLOW,
    }
    return Schedule(project=workflow.project, workflow=workflow, **(values | fields))


def make_schedule(workflow, **fields) -> Schedule:
    return services.schedule_save(schedule=unsaved(workflow, **fields))


def task_of(schedule: Schedule) -> PeriodicTask:
    return PeriodicTask.objects.select_related("crontab").get(name=f"schedule:{schedule.pk}")


def crontab_fields(crontab: CrontabSchedule) -> tuple:
    return (
        crontab.minute,
        crontab.hour,
        crontab.day_of_month,
        crontab.month_of_year,
        crontab.day_of_week,
        str(crontab.timezone),
    )


def fire(schedule: Schedule, at: datetime) -> ScheduleFire | None:
    return services.fire(schedule_id=schedule.pk, now=at)


def outcomes(schedule: Schedule) -> list[tuple[datetime, str]]:
    return list(schedule.fires.order_by("nominal_time").values_list("nominal_time", "outcome"))


def finish(fire_row: ScheduleFire, status: str = RunStatus.SUCCEEDED) -> None:
    Run.objects.filter(pk=fire_row.run_id).update(status=status)


def mark_changes_old() -> None:
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": LONG_AGO})


def changes_bumped() -> bool:
    return PeriodicTasks.last_change() > LONG_AGO


@pytest.fixture
def clock(time_machine):
    time_machine.move_to(T0, tick=False)
    return time_machine


@pytest.fixture
def workflow(team):
    return published_workflow(team.project)


@pytest.fixture
def eager():
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


# ------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------
def errors_of(schedule: Schedule) -> dict:
    with pytest.raises(ValidationError) as caught:
        services.schedule_save(schedule=schedule)
    return caught.value.message_dict


def test_it_refuses_a_bad_cron_with_its_field_messages_and_saves_nothing(workflow):
    assert errors_of(unsaved(workflow, cron="61 25 * * *")) == {
        "cron": ["minute: 61 is outside 0-59.", "hour: 25 is outside 0-23."]
    }
    assert errors_of(unsaved(workflow, cron="0 9 * *"))["cron"] == [
        "expression: Five fields are needed (minute hour day month weekday); got 4."
    ]
    assert not Schedule.objects.exists()
    assert not PeriodicTask.objects.exists()


def test_it_refuses_an_unknown_timezone(workflow):
    assert errors_of(unsaved(workflow, timezone="Mars/Olympus_Mons")) == {
        "timezone": ["Unknown timezone 'Mars/Olympus_Mons'; use an IANA name such as Europe/Berlin."]
    }


def test_it_checks_inputs_against_the_workflows_input_schema(workflow):
    assert errors_of(unsaved(workflow, inputs={"topic": 5})) == {"inputs": ["topic: 5 is not of type 'string'"]}
    assert errors_of(unsaved(workflow, inputs={})) == {"inputs": ["(inputs): 'topic' is a required property"]}
    assert not Schedule.objects.exists()


def test_it_refuses_a_workflow_without_a_published_version(team):
    published_workflow(team.project, "first")  # the echo agent
    draft = workflow_create(
        project=team.project,
        user=None,
        name="Draft",
        slug="draft",
        definition={"steps": [{"key": "say", "kind": "agent", "agent": "echo", "prompt": "hi"}]},
    )
    assert errors_of(unsaved(draft, inputs={})) == {"workflow": ["The workflow has no published version to run."]}


def test_it_refuses_a_version_of_another_workflow_or_an_unpublished_one(team, workflow):
    other = published_workflow(team.project, "other")
    assert errors_of(unsaved(workflow, version=other.versions.get()))["version"] == [
        "Pin a published version of this schedule's workflow."
    ]
    workflow_update(workflow=workflow, user=None, input_schema=SECOND_SCHEMA)
    draft = workflow.versions.get(number=2)
    assert errors_of(unsaved(workflow, version=draft))["version"] == [
        "Pin a published version of this schedule's workflow."
    ]


def test_it_refuses_a_workflow_of_another_project(team, workflow):
    theirs = published_workflow(team.other_project, "theirs")
    schedule = unsaved(theirs)
    schedule.project = team.project
    assert errors_of(schedule) == {"workflow": ["The workflow belongs to another project."]}


def test_jitter_is_at_most_an_hour(workflow):
    assert errors_of(unsaved(workflow, jitter_seconds=3601)) == {"jitter_seconds": ["At most 3600 seconds."]}
    assert make_schedule(workflow, jitter_seconds=3600).jitter_seconds == 3600


def test_names_are_unique_within_a_project(workflow):
    make_schedule(workflow)
    assert "__all__" in errors_of(unsaved(workflow))
    assert Schedule.objects.count() == 1


# ------------------------------------------------------------------------------
# The beat side: one PeriodicTask per schedule, shared crontabs, the change counter
# ------------------------------------------------------------------------------
def test_creating_a_schedule_creates_its_one_periodic_task(workflow, clock):
    schedule = make_schedule(workflow, cron="0 9 * * mon-fri", timezone="Europe/Berlin")

    task = task_of(schedule)
    assert PeriodicTask.objects.filter(name__startswith="schedule:").count() == 1
    assert task.task == "runs.schedule_fire"
    assert json.loads(task.args) == [str(schedule.pk)]
    assert json.loads(task.kwargs) == {}
    assert (task.enabled, task.one_off, task.interval_id, task.solar_id, task.clocked_id) == (
        True,
        False,
        None,
        None,
        None,
    )
    assert crontab_fields(task.crontab) == ("0", "9", "*", "*", "mon-fri", "Europe/Berlin")
    assert schedule.next_fire_at == datetime(2026, 5, 4, 7, tzinfo=UTC) + timedelta(days=1)


@pytest.mark.parametrize(
    ("expression", "beat"),
    [
        ("*/15 * * * *", ("*/15", "*", "*", "*", "*")),
        ("0 9-17/4 * * mon-fri", ("0", "9-17/4", "*", "*", "mon-fri")),
        ("5/20 * * * *", ("5,25,45", "*", "*", "*", "*")),
        ("0 9 * * 7", ("0", "9", "*", "*", "0")),
        ("0 9 * * 5-7", ("0", "9", "*", "*", "0,5,6")),
        ("0 9 * jan-mar sat,sun", ("0", "9", "*", "jan-mar", "sat,sun")),
        ("0 9 * * 0,7", ("0", "9", "*", "*", "0")),
        ("0 9 1 * *", ("0", "9", "1", "*", "*")),
        # Either day field may match, so beat wakes every day and fire() picks the right ones.
        ("0 9 1 * mon", ("0", "9", "*", "*", "*")),
    ],
)
def test_beat_reads_each_cron_field_as_we_do(workflow, expression, beat):
    task = task_of(make_schedule(workflow, cron=expression))
    assert crontab_fields(task.crontab)[:5] == beat
    parsed, celery = services.cron.parse(expression), task.schedule  # what beat builds, or fails to
    assert celery.minute == parsed.minutes
    assert celery.hour == parsed.hours
    assert celery.month_of_year == parsed.months
    assert celery.day_of_week >= parsed.weekdays
    assert celery.day_of_month >= parsed.days


def beat_wakes(time_machine, task: PeriodicTask, start: datetime, end: datetime) -> list[datetime]:
    """When celery beat would send the task between start and end, as its loop decides."""
    schedule, last, now, woke = task.schedule, start, start, []
    while now < end:
        time_machine.move_to(now, tick=False)
        due, wait = schedule.is_due(last)
        if due:
            woke.append(now)
            last = now
        now += timedelta(seconds=min(max(wait, 1), 300))
    return woke


@pytest.mark.parametrize(
    ("expression", "zone", "start"),
    [
        ("0 9 1 * mon", "UTC", datetime(2026, 5, 28, tzinfo=UTC)),
        ("30 2 * * *", "America/New_York", datetime(2026, 3, 6, tzinfo=UTC)),
        ("30 1 * * *", "America/New_York", datetime(2026, 10, 30, tzinfo=UTC)),
        ("0 9 * * *", "Europe/Berlin", datetime(2026, 3, 27, tzinfo=UTC)),
        ("0 9 * * 5-7", "Europe/Berlin", datetime(2026, 10, 20, tzinfo=UTC)),
    ],
)
def test_beat_wakes_at_every_slot_we_fire(workflow, time_machine, expression, zone, start):
    time_machine.move_to(start, tick=False)
    schedule = make_schedule(workflow, cron=expression, timezone=zone)
    end = start + timedelta(days=14)
    ours = services.preview(schedule, 100, after=start)
    ours = [instant for instant in ours if instant < end]

    woke = beat_wakes(time_machine, task_of(schedule), start, end)

    assert ours
    assert set(ours) <= set(woke)


def test_schedules_of_the_same_shape_share_one_crontab(team, workflow):
    first = make_schedule(workflow, name="A", cron="0 9 * * mon-fri", timezone="Europe/Berlin")
    second = make_schedule(workflow, name="B", cron="0 9 * * mon-fri", timezone="Europe/Berlin")
    third = make_schedule(workflow, name="C", cron="0 9 * * mon-fri", timezone="UTC")

    assert task_of(first).crontab_id == task_of(second).crontab_id
    assert task_of(third).crontab_id != task_of(first).crontab_id
    assert CrontabSchedule.objects.count() == 2


def test_a_twin_crontab_row_is_reused_not_an_error(workflow):
    fields = {"minute": "0", "hour": "9", "day_of_month": "*", "month_of_year": "*", "day_of_week": "*"}
    twins = [CrontabSchedule.objects.create(**fields, timezone="UTC") for _ in range(2)]

    schedule = make_schedule(workflow, cron="0 9 * * *")

    assert task_of(schedule).crontab_id == twins[0].pk
    assert CrontabSchedule.objects.count() == 2


def test_editing_the_cron_moves_the_task_drops_the_unused_crontab_and_bumps_the_counter(workflow):
    schedule = make_schedule(workflow, cron="0 9 * * *", timezone="Europe/Berlin")
    old = task_of(schedule).crontab_id
    mark_changes_old()

    schedule.cron, schedule.timezone = "30 18 * * fri", "America/New_York"
    services.schedule_save(schedule=schedule)

    task = task_of(schedule)
    assert crontab_fields(task.crontab) == ("30", "18", "*", "*", "fri", "America/New_York")
    assert not CrontabSchedule.objects.filter(pk=old).exists()
    assert PeriodicTask.objects.filter(name__startswith="schedule:").count() == 1
    assert changes_bumped()


def test_editing_keeps_a_crontab_another_schedule_still_uses(workflow):
    first = make_schedule(workflow, name="A", cron="0 9 * * *")
    second = make_schedule(workflow, name="B", cron="0 9 * * *")
    shared = task_of(first).crontab_id

    first.cron = "0 10 * * *"
    services.schedule_save(schedule=first)

    assert task_of(second).crontab_id == shared
    assert CrontabSchedule.objects.filter(pk=shared).exists()


def test_disabling_through_an_edit_disables_the_task_and_bumps_the_counter(workflow):
    schedule = make_schedule(workflow)
    mark_changes_old()

    schedule.enabled = False
    services.schedule_save(schedule=schedule)

    assert task_of(schedule).enabled is False
    assert Schedule.objects.get().next_fire_at is None
    assert changes_bumped()


def test_pausing_and_resuming_keep_the_task_in_step(workflow, clock):
    schedule = make_schedule(workflow)
    mark_changes_old()

    services.schedule_set_enabled(schedule=schedule, enabled=False, reason="Holidays.")
    row = Schedule.objects.get()
    assert (row.enabled, row.paused_reason, row.next_fire_at) == (False, "Holidays.", None)
    assert task_of(schedule).enabled is False
    assert changes_bumped()

    clock.move_to(SLOT + 3 * HOUR + timedelta(minutes=10), tick=False)
    services.schedule_set_enabled(schedule=schedule, enabled=True)
    row = Schedule.objects.get()
    assert (row.enabled, row.paused_reason, row.next_fire_at) == (True, "", SLOT + 4 * HOUR)
    assert task_of(schedule).enabled is True


def test_resuming_does_not_replay_what_was_missed_while_paused(workflow, clock):
    schedule = make_schedule(workflow)
    services.schedule_set_enabled(schedule=schedule, enabled=False)
    clock.move_to(SLOT + 3 * HOUR + timedelta(minutes=10), tick=False)
    services.schedule_set_enabled(schedule=schedule, enabled=True)

    started = fire(schedule, SLOT + 4 * HOUR)

    assert outcomes(schedule) == [(SLOT + 4 * HOUR, FireOutcome.STARTED)]
    assert started.run is not None


def test_deleting_removes_the_task_and_its_unused_crontab_but_keeps_a_shared_one(workflow):
    alone = make_schedule(workflow, name="Alone", cron="0 7 * * *")
    first = make_schedule(workflow, name="A", cron="0 9 * * *")
    second = make_schedule(workflow, name="B", cron="0 9 * * *")
    lonely, shared = task_of(alone).crontab_id, task_of(first).crontab_id
    mark_changes_old()

    services.schedule_delete(schedule=alone)
    services.schedule_delete(schedule=first)

    assert not PeriodicTask.objects.filter(name__in=[f"schedule:{alone.pk}", f"schedule:{first.pk}"]).exists()
    assert not CrontabSchedule.objects.filter(pk=lonely).exists()
    assert task_of(second).crontab_id == shared
    assert list(Schedule.objects.values_list("name", flat=True)) == ["B"]
    assert changes_bumped()


def test_deleting_keeps_a_crontab_a_users_own_task_uses(workflow):
    schedule = make_schedule(workflow, cron="0 9 * * *")
    crontab = task_of(schedule).crontab
    PeriodicTask.objects.create(name="nightly-report", task="reports.nightly", crontab=crontab)

    services.schedule_delete(schedule=schedule)

    assert PeriodicTask.objects.get(name="nightly-report").crontab_id == crontab.pk


def test_bulk_pause_and_resume_update_every_task_and_bump_the_counter_once(workflow, clock):
    first = make_schedule(workflow, name="A")
    second = make_schedule(workflow, name="B")
    untouched = make_schedule(workflow, name="C")
    mark_changes_old()

    assert services.schedules_set_enabled(queryset=Schedule.objects.exclude(name="C"), enabled=False) == 2

    assert changes_bumped()
    assert [task_of(s).enabled for s in (first, second, untouched)] == [False, False, True]
    assert list(Schedule.objects.order_by("name").values_list("enabled", "next_fire_at")) == [
        (False, None),
        (False, None),
        (True, SLOT),
    ]

    mark_changes_old()
    clock.move_to(SLOT + timedelta(minutes=30), tick=False)
    assert services.schedules_set_enabled(queryset=Schedule.objects.all(), enabled=True) == 3
    assert changes_bumped()
    assert all(task_of(s).enabled for s in (first, second, untouched))
    assert set(Schedule.objects.values_list("enabled", "next_fire_at", "last_fire_at")) == {
        (True, SLOT + HOUR, SLOT + timedelta(minutes=30))
    }


# ------------------------------------------------------------------------------
# sync_all and the sync_schedules command
# ------------------------------------------------------------------------------
@pytest.fixture
def drifted(workflow):
    """Four schedules: one in step, one whose task was deleted, one whose task was edited, and a task
    left from a deleted schedule; plus tasks that are not ours."""
    fine = make_schedule(workflow, name="Fine", cron="0 9 * * *")
    lost = make_schedule(workflow, name="Lost", cron="0 10 * * *")
    edited = make_schedule(workflow, name="Edited", cron="0 11 * * *", timezone="Europe/Berlin")
    PeriodicTask.objects.filter(name=f"schedule:{lost.pk}").delete()
    task = task_of(edited)
    task.crontab = CrontabSchedule.objects.create(minute="5", hour="5", timezone="UTC")
    task.enabled, task.args, task.task, task.one_off = False, '["nope"]', "other.task", True
    task.save()
    orphan_crontab = CrontabSchedule.objects.create(minute="1", hour="1", timezone="UTC")
    PeriodicTask.objects.create(
        name=f"schedule:{uuid.uuid4()}", task="runs.schedule_fire", crontab=orphan_crontab, args="[]"
    )
    every = IntervalSchedule.objects.create(every=30, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="runs-reap", task="runs.reap", interval=every)
    PeriodicTask.objects.create(name="schedules-report", task="reports.weekly", crontab=task_of(fine).crontab)
    return {"fine": fine, "lost": lost, "edited": edited, "orphan_crontab": orphan_crontab}


def foreign_tasks() -> list[tuple]:
    return list(
        PeriodicTask.objects.exclude(name__startswith="schedule:")
        .order_by("name")
        .values_list("name", "task", "enabled", "crontab_id", "interval_id", "args", "description")
    )


def test_sync_all_repairs_drift_and_reports_it(drifted):
    others = foreign_tasks()
    mark_changes_old()

    assert services.sync_all() == {"created": 1, "updated": 1, "deleted": 1, "unchanged": 1}

    for key in ("fine", "lost", "edited"):
        schedule = drifted[key]
        task, wanted = task_of(schedule), services.desired_task(schedule)
        assert {field: getattr(task, field) for field in wanted} == wanted
    edited = task_of(drifted["edited"])
    assert crontab_fields(edited.crontab) == ("0", "11", "*", "*", "*", "Europe/Berlin")
    assert (edited.enabled, json.loads(edited.args), edited.task) == (True, [str(drifted["edited"].pk)], FIRE_TASK)
    assert set(PeriodicTask.objects.filter(name__startswith="schedule:").values_list("name", flat=True)) == {
        f"schedule:{drifted[key].pk}" for key in ("fine", "lost", "edited")
    }
    assert not CrontabSchedule.objects.filter(minute="5", hour="5").exists()  # the edit's crontab, now unused
    assert not CrontabSchedule.objects.filter(pk=drifted["orphan_crontab"].pk).exists()
    assert foreign_tasks() == others
    assert changes_bumped()


def test_sync_all_is_idempotent(drifted):
    services.sync_all()
    tasks_before = list(PeriodicTask.objects.order_by("name").values())
    crontabs_before = CrontabSchedule.objects.count()
    mark_changes_old()

    assert services.sync_all() == {"created": 0, "updated": 0, "deleted": 0, "unchanged": 3}

    assert list(PeriodicTask.objects.order_by("name").values()) == tasks_before
    assert CrontabSchedule.objects.count() == crontabs_before
    assert not changes_bumped()


def test_sync_all_never_touches_tasks_that_are_not_ours(workflow):
    every = IntervalSchedule.objects.create(every=30, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="runs-reap", task="runs.reap", interval=every)
    lonely = CrontabSchedule.objects.create(minute="0", hour="3", timezone="UTC")
    PeriodicTask.objects.create(name="nightly-export", task="exports.nightly", crontab=lonely, enabled=False)
    others = foreign_tasks()

    assert services.sync_all() == {"created": 0, "updated": 0, "deleted": 0, "unchanged": 0}

    assert foreign_tasks() == others
    assert CrontabSchedule.objects.filter(pk=lonely.pk).exists()


def test_sync_all_removes_the_task_of_a_schedule_deleted_with_its_workflow(workflow):
    schedule = make_schedule(workflow)
    workflow_delete(workflow=workflow)
    assert not Schedule.objects.exists()

    services.sync_all()

    assert not PeriodicTask.objects.filter(name=f"schedule:{schedule.pk}").exists()
    assert not CrontabSchedule.objects.exists()


def test_the_sync_schedules_command_repairs_and_reports_counts(drifted):
    out = StringIO()
    call_command("sync_schedules", stdout=out)
    assert out.getvalue().strip() == "1 created, 1 updated, 1 deleted, 1 unchanged"

    again = StringIO()
    call_command("sync_schedules", stdout=again)
    assert again.getvalue().strip() == "0 created, 0 updated, 0 deleted, 3 unchanged"
    assert PeriodicTask.objects.filter(name__startswith="schedule:").count() == 3


# ------------------------------------------------------------------------------
# The fire ledger
# ------------------------------------------------------------------------------
def test_the_database_holds_one_fire_per_slot(workflow):
    schedule = make_schedule(workflow)
    ScheduleFire.objects.create(schedule=schedule, nominal_time=SLOT, outcome=FireOutcome.STARTED)
    with pytest.raises(IntegrityError), transaction.atomic():
        ScheduleFire.objects.create(schedule=schedule, nominal_time=SLOT, outcome=FireOutcome.SKIPPED_LATE)
    assert ScheduleFire.objects.count() == 1


def test_a_fire_starts_a_run_that_links_back_to_it(team, workflow, clock):
    schedule = make_schedule(workflow, created_by=team.members["admin"])
    clock.move_to(SLOT + timedelta(seconds=2), tick=False)

    started = tasks.schedule_fire(str(schedule.pk))  # beat's message, run here

    assert started is None  # a task returns nothing; the ledger says what happened
    row = ScheduleFire.objects.get()
    assert (row.nominal_time, row.outcome, row.manual, row.reason) == (SLOT, FireOutcome.STARTED, False, "")
    run = Run.objects.get()
    assert row.run_id == run.pk
    assert run.schedule_fire == row
    assert (run.trigger, run.status, run.inputs) == (Trigger.SCHEDULE, RunStatus.QUEUED, {"topic": "news"})
    assert run.workflow_version == workflow.versions.get(number=1)
    assert run.created_by == team.members["admin"]
    assert run.title == "Digest @ 2026-05-04 08:00 UTC"
    schedule.refresh_from_db()
    assert (schedule.last_fire_at, schedule.next_fire_at) == (SLOT, SLOT + HOUR)


def test_firing_one_slot_twice_starts_one_run(workflow, clock):
    schedule = make_schedule(workflow)

    first = fire(schedule, SLOT + timedelta(seconds=1))
    second = fire(schedule, SLOT + timedelta(seconds=3))

    assert first.outcome == FireOutcome.STARTED
    assert second is None
    assert outcomes(schedule) == [(SLOT, FireOutcome.STARTED)]
    assert Run.objects.count() == 1


def test_an_early_message_does_nothing(workflow, clock):
    schedule = make_schedule(workflow)
    assert fire(schedule, SLOT - timedelta(seconds=5)) is None
    assert not ScheduleFire.objects.exists()
    assert fire(schedule, SLOT) is not None


def test_a_version_pin_is_what_runs(workflow, clock):
    first = workflow.versions.get()
    workflow_update(workflow=workflow, user=None, input_schema=SECOND_SCHEMA)
    version_publish(version=workflow.versions.get(number=2))
    pinned = make_schedule(workflow, name="Pinned", version=first)
    latest = make_schedule(workflow, name="Latest")

    assert fire(pinned, SLOT).run.workflow_version == first
    assert fire(latest, SLOT).run.workflow_version.number == 2


def test_a_fire_whose_run_cannot_start_is_recorded_as_failed_with_the_reason(workflow, clock):
    schedule = make_schedule(workflow)
    workflow_update(workflow=workflow, user=None, active=False)

    failed = fire(schedule, SLOT)

    assert (failed.outcome, failed.reason, failed.run) == (
        FireOutcome.FAILED,
        "workflow: The workflow is inactive.",
        None,
    )
    assert not Run.objects.exists()
    assert Schedule.objects.get().last_fire_at == SLOT  # handled: the next fire does not retry it


def test_a_fire_for_a_deleted_schedule_does_nothing(workflow):
    schedule = make_schedule(workflow)
    services.schedule_delete(schedule=schedule)
    assert fire(schedule, SLOT) is None
    assert not ScheduleFire.objects.exists()


@pytest.mark.skipif(not ON_POSTGRESQL, reason="SQLite serialises writers; the race needs PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_two_beats_firing_one_slot_at_the_same_moment_start_one_run(time_machine):
    from sparkops.testing import make_team

    time_machine.move_to(T0, tick=False)
    schedule = make_schedule(published_workflow(make_team().project))
    barrier, results, errors = threading.Barrier(2), [], []

    def beat() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(services.fire(schedule_id=schedule.pk, now=SLOT + timedelta(seconds=1)))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=beat) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert sorted(result is None for result in results) == [False, True]
    assert outcomes(schedule) == [(SLOT, FireOutcome.STARTED)]
    assert Run.objects.count() == 1
    assert ScheduleFire.objects.get().run_id == Run.objects.get().pk


# ------------------------------------------------------------------------------
# Overlap
# ------------------------------------------------------------------------------
def test_allow_starts_even_while_a_run_is_active(workflow, clock):
    schedule = make_schedule(workflow, overlap_policy=OverlapPolicy.ALLOW)
    fire(schedule, SLOT)
    fire(schedule, SLOT + HOUR)
    assert outcomes(schedule) == [(SLOT, FireOutcome.STARTED), (SLOT + HOUR, FireOutcome.STARTED)]
    assert Run.objects.filter(status=RunStatus.QUEUED).count() == 2


def test_skip_skips_while_a_run_is_active_and_starts_once_it_ended(workflow, clock):
    schedule = make_schedule(workflow, overlap_policy=OverlapPolicy.SKIP)
    first = fire(schedule, SLOT)

    skipped = fire(schedule, SLOT + HOUR)
    assert (skipped.outcome, skipped.reason, skipped.run) == (
        FireOutcome.SKIPPED_OVERLAP,
        "A run of this schedule is still active.",
        None,
    )
    finish(first)
    assert fire(schedule, SLOT + 2 * HOUR).outcome == FireOutcome.STARTED
    assert Run.objects.count() == 2


def test_allow_n_allows_up_to_max_active_runs(workflow, clock):
    schedule = make_schedule(workflow, overlap_policy=OverlapPolicy.ALLOW_N, max_active=2)
    first = fire(schedule, SLOT)
    fire(schedule, SLOT + HOUR)

    third = fire(schedule, SLOT + 2 * HOUR)
    assert (third.outcome, third.reason) == (FireOutcome.SKIPPED_OVERLAP, "2 runs active; the limit is 2.")

    finish(first, RunStatus.FAILED)
    assert fire(schedule, SLOT + 3 * HOUR).outcome == FireOutcome.STARTED
    assert [o for _, o in outcomes(schedule)] == ["started", "started", "skipped_overlap", "started"]


def test_buffer_one_buffers_one_fire_and_skips_the_next(workflow, clock):
    schedule = make_schedule(workflow, overlap_policy=OverlapPolicy.BUFFER_ONE)
    first = fire(schedule, SLOT)
    buffered = fire(schedule, SLOT + HOUR)
    skipped = fire(schedule, SLOT + 2 * HOUR)

    assert (buffered.outcome, buffered.reason, buffered.run) == (
        FireOutcome.BUFFERED,
        "Starts when the active run ends.",
        None,
    )
    assert skipped.outcome == FireOutcome.SKIPPED_OVERLAP
    assert services.release_buffered() == 0  # the first run is still active
    assert ScheduleFire.objects.get(pk=buffered.pk).outcome == FireOutcome.BUFFERED

    finish(first)
    assert services.release_buffered() == 1

    released = ScheduleFire.objects.get(pk=buffered.pk)
    assert (released.outcome, released.reason) == (FireOutcome.STARTED, "")
    assert released.run.trigger == Trigger.SCHEDULE
    assert released.run.title == "Digest @ 2026-05-04 09:00 UTC"
    assert services.release_buffered() == 0  # never twice
    assert Run.objects.count() == 2


def test_workers_know_the_fire_task_by_the_name_beat_rows_store_and_release_buffered_fires_on_their_own_beat():
    assert services.FIRE_TASK == "runs.schedule_fire"
    assert celery_app.tasks[services.FIRE_TASK].run.__module__ == "schedules.tasks"
    entry = settings.CELERY_BEAT_SCHEDULE["schedules-release-buffered"]
    assert entry["task"] in celery_app.tasks
    assert entry["schedule"] == settings.CELERY_BEAT_SCHEDULE["runs-reap"]["schedule"]


def test_the_release_task_starts_a_buffered_fire_once_the_active_run_ended(workflow, clock):
    schedule = make_schedule(workflow, overlap_policy=OverlapPolicy.BUFFER_ONE)
    first = fire(schedule, SLOT)
    buffered = fire(schedule, SLOT + HOUR)
    finish(first)

    started = tasks.release_buffered()

    assert started == 1
    assert ScheduleFire.objects.get(pk=buffered.pk).run.status == RunStatus.QUEUED


def test_buffered_fires_the_release_task_started_show_among_the_reaper_actions_on_metrics(workflow, clock):
    schedule = make_schedule(workflow, overlap_policy=OverlapPolicy.BUFFER_ONE)
    first = fire(schedule, SLOT)
    fire(schedule, SLOT + HOUR)
    finish(first)

    tasks.release_buffered()
    tasks.release_buffered()  # nothing left to start: the counter stays

    response = Client().get("/metrics")
    assert response.status_code == 200, response.content
    found = {
        (sample.name, sample.labels.get("action")): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }
    assert found["sparkops_reaper_actions_total", "buffered_fires_started"] == 1


def test_a_buffered_fire_then_blocks_the_next_one_as_an_active_run(workflow, clock):
    schedule = make_schedule(workflow, overlap_policy=OverlapPolicy.BUFFER_ONE)
    finish_later = fire(schedule, SLOT)
    fire(schedule, SLOT + HOUR)
    finish(finish_later)
    services.release_buffered()

    assert fire(schedule, SLOT + 2 * HOUR).outcome == FireOutcome.BUFFERED


# ------------------------------------------------------------------------------
# Catch-up
# ------------------------------------------------------------------------------
def test_a_fire_just_inside_90_seconds_is_on_time_and_just_outside_is_late(workflow, clock):
    schedule = make_schedule(workflow, catchup_policy=CatchupPolicy.SKIP_MISSED)
    assert fire(schedule, SLOT + timedelta(seconds=90)).outcome == FireOutcome.STARTED
    late = fire(schedule, SLOT + HOUR + timedelta(seconds=91))
    assert (late.outcome, late.reason) == (FireOutcome.SKIPPED_LATE, "91s late.")


def test_skip_missed_records_every_missed_slot_and_starts_nothing(workflow, clock):
    schedule = make_schedule(workflow, catchup_policy=CatchupPolicy.SKIP_MISSED)

    latest = fire(schedule, SLOT + 4 * HOUR + timedelta(minutes=30))

    assert (latest.nominal_time, latest.outcome, latest.reason) == (
        SLOT + 4 * HOUR,
        FireOutcome.SKIPPED_LATE,
        "1800s late.",
    )
    assert outcomes(schedule) == [(SLOT + n * HOUR, FireOutcome.SKIPPED_LATE) for n in range(5)]
    assert set(schedule.fires.exclude(pk=latest.pk).values_list("reason", flat=True)) == {
        "Missed while no scheduler was firing."
    }
    assert not Run.objects.exists()
    row = Schedule.objects.get()
    assert (row.last_fire_at, row.next_fire_at) == (SLOT + 4 * HOUR, SLOT + 5 * HOUR)


def test_latest_in_window_starts_only_the_latest_missed_slot(workflow, clock):
    schedule = make_schedule(workflow, catchup_policy=CatchupPolicy.LATEST_IN_WINDOW, catchup_window_seconds=3600)

    fire(schedule, SLOT + 3 * HOUR + timedelta(minutes=30))

    assert outcomes(schedule) == [
        (SLOT, FireOutcome.SKIPPED_LATE),
        (SLOT + HOUR, FireOutcome.SKIPPED_LATE),
        (SLOT + 2 * HOUR, FireOutcome.SKIPPED_LATE),
        (SLOT + 3 * HOUR, FireOutcome.STARTED),
    ]
    assert Run.objects.get().schedule_fire.nominal_time == SLOT + 3 * HOUR


def test_latest_in_window_skips_a_slot_past_the_window(workflow, clock):
    schedule = make_schedule(
        workflow, cron="0 8 * * *", catchup_policy=CatchupPolicy.LATEST_IN_WINDOW, catchup_window_seconds=3600
    )

    late = fire(schedule, SLOT + 2 * HOUR)

    assert (late.nominal_time, late.outcome, late.reason) == (SLOT, FireOutcome.SKIPPED_LATE, "7200s late.")
    assert not Run.objects.exists()


def test_a_flood_of_missed_slots_is_recorded_up_to_a_limit(workflow, clock):
    schedule = make_schedule(workflow, cron="* * * * *")
    fire(schedule, T0 + timedelta(days=1))
    assert schedule.fires.count() == services.MAX_MISSED_RECORDED
    assert schedule.fires.order_by("-nominal_time").first().nominal_time == T0 + timedelta(days=1)


# ------------------------------------------------------------------------------
# Auto-pause
# ------------------------------------------------------------------------------
def test_it_pauses_after_n_failed_scheduled_runs_in_a_row(workflow, clock):
    schedule = make_schedule(workflow, auto_pause_after=2)
    for n in range(2):
        clock.move_to(SLOT + n * HOUR, tick=False)
        finish(fire(schedule, SLOT + n * HOUR), RunStatus.FAILED)
    mark_changes_old()

    paused = fire(schedule, SLOT + 2 * HOUR)

    assert (paused.outcome, paused.reason, paused.run) == (
        FireOutcome.SKIPPED_PAUSED,
        "Paused after 2 failed runs in a row.",
        None,
    )
    row = Schedule.objects.get()
    assert (row.enabled, row.paused_reason, row.next_fire_at) == (
        False,
        "Paused after 2 failed runs in a row.",
        None,
    )
    assert task_of(schedule).enabled is False
    assert changes_bumped()
    assert Run.objects.count() == 2
    assert fire(schedule, SLOT + 3 * HOUR).outcome == FireOutcome.SKIPPED_PAUSED  # a message already sent


def test_resuming_an_auto_paused_schedule_starts_a_new_streak(workflow, clock):
    schedule = make_schedule(workflow, auto_pause_after=2)
    for n in range(2):
        clock.move_to(SLOT + n * HOUR, tick=False)
        finish(fire(schedule, SLOT + n * HOUR), RunStatus.FAILED)
    fire(schedule, SLOT + 2 * HOUR)
    clock.move_to(SLOT + 2 * HOUR + timedelta(minutes=10), tick=False)
    services.schedule_set_enabled(schedule=Schedule.objects.get(), enabled=True)

    clock.move_to(SLOT + 3 * HOUR, tick=False)
    retried = fire(schedule, SLOT + 3 * HOUR)
    assert retried.outcome == FireOutcome.STARTED  # the failures before the resume are not held against it
    finish(retried, RunStatus.FAILED)
    clock.move_to(SLOT + 4 * HOUR, tick=False)
    finish(fire(schedule, SLOT + 4 * HOUR), RunStatus.FAILED)

    assert fire(schedule, SLOT + 5 * HOUR).outcome == FireOutcome.SKIPPED_PAUSED
    assert Schedule.objects.get().enabled is False


def test_bulk_resuming_an_auto_paused_schedule_starts_a_new_streak(workflow, clock):
    schedule = make_schedule(workflow, auto_pause_after=1)
    finish(fire(schedule, SLOT), RunStatus.FAILED)
    fire(schedule, SLOT + HOUR)
    clock.move_to(SLOT + HOUR + timedelta(minutes=10), tick=False)
    services.schedules_set_enabled(queryset=Schedule.objects.all(), enabled=True)

    assert fire(schedule, SLOT + 2 * HOUR).outcome == FireOutcome.STARTED


def test_one_success_among_the_last_n_keeps_it_running(workflow, clock):
    schedule = make_schedule(workflow, auto_pause_after=2)
    clock.move_to(SLOT, tick=False)
    finish(fire(schedule, SLOT), RunStatus.FAILED)
    clock.move_to(SLOT + HOUR, tick=False)
    finish(fire(schedule, SLOT + HOUR), RunStatus.SUCCEEDED)

    assert fire(schedule, SLOT + 2 * HOUR).outcome == FireOutcome.STARTED
    assert Schedule.objects.get().enabled is True


def test_manual_triggers_do_not_count_towards_auto_pause(workflow, clock):
    schedule = make_schedule(workflow, auto_pause_after=2)
    clock.move_to(SLOT, tick=False)
    finish(fire(schedule, SLOT), RunStatus.FAILED)
    for minutes in (10, 20):
        clock.move_to(SLOT + timedelta(minutes=minutes), tick=False)
        finish(services.trigger(schedule=schedule), RunStatus.FAILED)

    assert fire(schedule, SLOT + HOUR).outcome == FireOutcome.STARTED
    assert Schedule.objects.get().enabled is True


def test_a_manual_success_does_not_hide_failed_scheduled_runs(workflow, clock):
    schedule = make_schedule(workflow, auto_pause_after=2)
    for n in range(2):
        clock.move_to(SLOT + n * HOUR, tick=False)
        finish(fire(schedule, SLOT + n * HOUR), RunStatus.FAILED)
    clock.move_to(SLOT + HOUR + timedelta(minutes=30), tick=False)
    finish(services.trigger(schedule=schedule), RunStatus.SUCCEEDED)

    assert fire(schedule, SLOT + 2 * HOUR).outcome == FireOutcome.SKIPPED_PAUSED
    assert Schedule.objects.get().enabled is False


# ------------------------------------------------------------------------------
# Manual triggers
# ------------------------------------------------------------------------------
def test_a_trigger_starts_a_run_now_recorded_as_a_manual_fire(workflow, clock):
    schedule = make_schedule(workflow, overlap_policy=OverlapPolicy.SKIP)
    fire(schedule, SLOT)  # an active run the clock would skip for
    clock.move_to(SLOT + timedelta(minutes=7), tick=False)

    manual = services.trigger(schedule=schedule)

    assert (manual.nominal_time, manual.outcome, manual.manual) == (
        SLOT + timedelta(minutes=7),
        FireOutcome.STARTED,
        True,
    )
    assert manual.run.trigger == Trigger.SCHEDULE
    assert Schedule.objects.get().last_fire_at == SLOT  # the clock's own slots go on as before
    assert fire(schedule, SLOT + HOUR).outcome == FireOutcome.SKIPPED_OVERLAP


def test_a_trigger_that_cannot_start_a_run_says_why(workflow, clock):
    schedule = make_schedule(workflow)
    workflow_update(workflow=workflow, user=None, active=False)
    manual = services.trigger(schedule=schedule)
    assert (manual.outcome, manual.reason, manual.manual) == (
        FireOutcome.FAILED,
        "workflow: The workflow is inactive.",
        True,
    )


# ------------------------------------------------------------------------------
# Jitter
# ------------------------------------------------------------------------------
def test_with_jitter_beats_message_sends_itself_again_carrying_the_beat_time(workflow, clock, eager):
    schedule = make_schedule(workflow, jitter_seconds=600)
    seen = []

    def record(sender=None, kwargs=None, **_):
        seen.append((sender.name, dict(kwargs or {})))

    task_prerun.connect(record, weak=False)
    clock.move_to(SLOT + timedelta(seconds=5), tick=False)
    try:
        tasks.schedule_fire.delay(str(schedule.pk))
    finally:
        task_prerun.disconnect(record)

    assert seen == [
        ("runs.schedule_fire", {}),
        ("runs.schedule_fire", {"beat_time": "2026-05-04T08:00:05+00:00"}),
    ]
    assert outcomes(schedule) == [(SLOT, FireOutcome.STARTED)]


def test_a_jittered_message_is_judged_at_the_time_beat_sent_it(workflow, clock):
    schedule = make_schedule(workflow, jitter_seconds=60)
    clock.move_to(SLOT + timedelta(minutes=30), tick=False)  # long after: the delay plus a busy queue

    tasks.schedule_fire(str(schedule.pk), beat_time=(SLOT + timedelta(seconds=4)).isoformat())

    assert outcomes(schedule) == [(SLOT, FireOutcome.STARTED)]


def test_without_the_beat_time_the_same_delay_is_late(workflow, clock):
    schedule = make_schedule(workflow, jitter_seconds=60)
    late = fire(schedule, SLOT + timedelta(minutes=30))
    assert late.outcome == FireOutcome.SKIPPED_LATE


def test_jitter_widens_the_on_time_allowance(workflow, clock):
    schedule = make_schedule(workflow, jitter_seconds=600)
    assert fire(schedule, SLOT + timedelta(seconds=600 + 90)).outcome == FireOutcome.STARTED
    assert fire(schedule, SLOT + HOUR + timedelta(seconds=600 + 91)).outcome == FireOutcome.SKIPPED_LATE


def test_the_jitter_delay_stays_within_bounds(workflow):
    assert services.jitter_delay(make_schedule(workflow, name="None")) == 0.0
    jittery = make_schedule(workflow, name="Some", jitter_seconds=30)
    assert all(0 <= services.jitter_delay(jittery) <= 30 for _ in range(200))


# ------------------------------------------------------------------------------
# Daylight saving time, with beat simulated
# ------------------------------------------------------------------------------
def started_per_local_day(schedule: Schedule, zone: ZoneInfo) -> Counter:
    started = schedule.fires.filter(outcome=FireOutcome.STARTED).values_list("nominal_time", flat=True)
    return Counter(moment.astimezone(zone).date() for moment in started)


def every_minute(start: datetime, end: datetime):
    moment = start
    while moment < end:
        yield moment
        moment += timedelta(minutes=1)


def beat_calls(start: datetime, days: int):
    """Every minute from 04:00 to 11:00 UTC, where the DST-sensitive slots of these tests lie, and
    every ten minutes for the rest of each day (calling every minute all day only costs time)."""
    for moment in every_minute(start, start + timedelta(days=days)):
        if 4 <= moment.hour < 11 or moment.minute % 10 == 0:
            yield moment


@pytest.mark.parametrize("change", [date(2026, 3, 29), date(2026, 10, 25)])
def test_a_daily_berlin_schedule_fires_once_a_day_with_beat_calling_each_minute(workflow, time_machine, change):
    start = datetime.combine(change - timedelta(days=2), datetime.min.time(), tzinfo=UTC)
    time_machine.move_to(start, tick=False)
    schedule = make_schedule(workflow, cron="0 9 * * *", timezone="Europe/Berlin")

    for moment in beat_calls(start, days=5):
        fire(schedule, moment + timedelta(seconds=2))

    days = [change + timedelta(days=n) for n in range(-2, 3)]
    assert started_per_local_day(schedule, BERLIN) == dict.fromkeys(days, 1)
    assert {t.astimezone(BERLIN).strftime("%H:%M") for t in schedule.fires.values_list("nominal_time", flat=True)} == {
        "09:00"
    }
    assert not schedule.fires.exclude(outcome=FireOutcome.STARTED).exists()
    assert Run.objects.count() == 5


@pytest.mark.parametrize("change", [date(2026, 3, 29), date(2026, 10, 25)])
def test_a_daily_berlin_schedule_fires_once_a_day_as_beats_task_with_the_clock_travelling(
    workflow, time_machine, change
):
    start = datetime.combine(change - timedelta(days=2), datetime.min.time(), tzinfo=UTC)
    time_machine.move_to(start, tick=False)
    schedule = make_schedule(workflow, cron="0 9 * * *", timezone="Europe/Berlin")
    days = [change + timedelta(days=n) for n in range(-2, 3)]

    for day in days:
        nominal = datetime.combine(day, datetime.min.time().replace(hour=9), tzinfo=BERLIN).astimezone(UTC)
        # Beat sends a little early, on time, twice, and late; also an hour either side (a DST slip).
        for offset in (-30, 0, 1, 1, 45, 89, 3600, -3600):
            time_machine.move_to(nominal + timedelta(seconds=offset), tick=False)
            tasks.schedule_fire(str(schedule.pk))

    assert started_per_local_day(schedule, BERLIN) == dict.fromkeys(days, 1)
    assert not schedule.fires.exclude(outcome=FireOutcome.STARTED).exists()


def test_a_new_york_0230_fires_once_at_0330_edt_on_the_day_the_clock_skips_it(workflow, time_machine):
    start = datetime(2026, 3, 7, 0, tzinfo=UTC)
    time_machine.move_to(start, tick=False)
    schedule = make_schedule(workflow, cron="30 2 * * *", timezone="America/New_York")

    for moment in beat_calls(start, days=3):
        fire(schedule, moment + timedelta(seconds=1))
    jumped = datetime(2026, 3, 8, 7, 30, tzinfo=UTC)
    assert fire(schedule, jumped + timedelta(seconds=20)) is None  # beat again for the same slot

    assert outcomes(schedule) == [
        (datetime(2026, 3, 7, 7, 30, tzinfo=UTC), FireOutcome.STARTED),
        (jumped, FireOutcome.STARTED),
        (datetime(2026, 3, 9, 6, 30, tzinfo=UTC), FireOutcome.STARTED),
    ]
    assert jumped.astimezone(NEW_YORK).isoformat() == "2026-03-08T03:30:00-04:00"


def test_a_new_york_0230_fires_once_on_the_day_the_clock_falls_back(workflow, time_machine):
    start = datetime(2026, 10, 31, 12, tzinfo=UTC)
    time_machine.move_to(start, tick=False)
    schedule = make_schedule(workflow, cron="30 2 * * *", timezone="America/New_York")
    slot = datetime(2026, 11, 1, 7, 30, tzinfo=UTC)  # 02:30 EST

    for moment in (slot, slot + timedelta(seconds=4), slot - HOUR, slot + HOUR, slot + timedelta(seconds=30)):
        time_machine.move_to(moment, tick=False)
        tasks.schedule_fire(str(schedule.pk))

    assert outcomes(schedule) == [(slot, FireOutcome.STARTED)]
    assert Run.objects.count() == 1


def test_a_new_york_0130_fires_once_not_again_in_the_repeated_hour(workflow, time_machine):
    start = datetime(2026, 10, 31, 12, tzinfo=UTC)
    time_machine.move_to(start, tick=False)
    schedule = make_schedule(workflow, cron="30 1 * * *", timezone="America/New_York")
    first = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT
    again = first + HOUR  # 01:30 EST, the same wall time

    for moment in (first, first + timedelta(seconds=3), again, again + timedelta(seconds=1)):
        time_machine.move_to(moment, tick=False)
        tasks.schedule_fire(str(schedule.pk))
    for moment in every_minute(first - HOUR, first + 3 * HOUR):
        fire(schedule, moment)

    assert outcomes(schedule) == [(first, FireOutcome.STARTED)]
    assert Run.objects.count() == 1


def test_preview_lists_the_next_fires_across_a_change(workflow, clock):
    schedule = make_schedule(workflow, cron="30 2 * * *", timezone="America/New_York")
    after = datetime(2026, 3, 6, 12, tzinfo=UTC)
    assert [t.astimezone(NEW_YORK).strftime("%d %H:%M %Z") for t in services.preview(schedule, 4, after)] == [
        "07 02:30 EST",
        "08 03:30 EDT",
        "09 02:30 EDT",
        "10 02:30 EDT",
    ]


def test_next_fire_at_follows_each_fire(workflow, clock):
    schedule = make_schedule(workflow, cron="0 9 * * *", timezone="Europe/Berlin")
    assert schedule.next_fire_at == datetime(2026, 5, 5, 7, tzinfo=UTC)
    fire(schedule, datetime(2026, 5, 5, 7, 0, 3, tzinfo=UTC))
    assert Schedule.objects.get().next_fire_at == datetime(2026, 5, 6, 7, tzinfo=UTC)


def test_a_fire_in_an_archived_project_starts_nothing_and_is_recorded_blocked(workflow, clock):
    clock.move_to(SLOT + 3 * HOUR + timedelta(minutes=10), tick=False)
    schedule = make_schedule(workflow)
    Project.objects.filter(pk=workflow.project_id).update(archived=True)

    settled = fire(schedule, SLOT + 4 * HOUR)

    assert outcomes(schedule) == [(SLOT + 4 * HOUR, FireOutcome.BLOCKED)]
    assert "archived" in settled.reason
    assert not Run.objects.exists()
