"""Moving Schedule and ScheduleFire from runs to schedules changed no row: a database migrated
before the move migrates forward with its schedules, fires and permissions as they were."""

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from accounts.tests.factories import UserFactory
from projects.tests.factories import ProjectFactory
from runs.tests.factories import bare_run
from schedules.choices import FireOutcome
from schedules.models import Schedule, ScheduleFire
from schedules.tests.factories import published_workflow

BEFORE_THE_MOVE = [("runs", "0007_step_handed_back_event")]
SLOT = datetime(2026, 5, 4, 9, tzinfo=UTC)


def migrate(targets) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()  # what was applied changed: read it again
    ContentType.objects.clear_cache()
    return executor


def rows(table: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table} ORDER BY 1")  # noqa: S608 - our own table names
        return cursor.fetchall()


@pytest.mark.django_db(transaction=True)
def test_a_database_from_before_the_move_keeps_its_schedules_fires_and_permissions():
    project = ProjectFactory()
    workflow = published_workflow(project)
    run = bare_run(workflow, inputs={"topic": "news"})
    operator = UserFactory(is_staff=True)

    old = migrate(BEFORE_THE_MOVE).loader.project_state(BEFORE_THE_MOVE).apps
    old_schedules, old_fires = old.get_model("runs", "Schedule"), old.get_model("runs", "ScheduleFire")
    schedule = old_schedules.objects.create(
        project_id=project.pk, workflow_id=workflow.pk, name="Nightly", cron="0 9 * * mon-fri",
        timezone="Europe/Berlin", inputs={"topic": "news"}, overlap_policy="buffer_one", jitter_seconds=30,
    )  # fmt: skip
    old_fires.objects.create(schedule=schedule, nominal_time=SLOT, outcome="started", run_id=run.pk)
    old_fires.objects.create(schedule=schedule, nominal_time=SLOT.replace(day=5), outcome="buffered", manual=True)
    change = Permission.objects.get(content_type__app_label="runs", codename="change_schedule")
    operator.user_permissions.add(change)
    before = rows("runs_schedule"), rows("runs_schedulefire")

    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

    # Columns later migrations add come last (paused_by_freeze): the old ones are unchanged.
    width = len(before[0][0])
    assert ([row[:width] for row in rows("runs_schedule")], rows("runs_schedulefire")) == before
    moved = Schedule.objects.get(pk=schedule.pk)
    assert (moved.project, moved.workflow, moved.name, moved.cron) == (project, workflow, "Nightly", "0 9 * * mon-fri")
    assert (moved.timezone, moved.inputs, moved.jitter_seconds) == ("Europe/Berlin", {"topic": "news"}, 30)
    fires = list(moved.fires.order_by("nominal_time").values_list("outcome", "manual", "run"))
    assert fires == [(FireOutcome.STARTED, False, run.pk), (FireOutcome.BUFFERED, True, None)]
    assert ScheduleFire.objects.get(run=run).schedule == moved
    assert run.schedule_fire.schedule_id == moved.pk  # the reverse relation on Run still works
    assert type(operator).objects.get(pk=operator.pk).has_perm("schedules.change_schedule")
    assert not ContentType.objects.filter(app_label="runs", model__in=["schedule", "schedulefire"]).exists()
