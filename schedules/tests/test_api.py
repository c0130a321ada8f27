"""/api/v1/schedules: roles (admins and owners write, members read, outsiders see nothing),
project isolation, validation through the schedules service, and the verbs pause, resume,
trigger, preview and fires. Every write is checked in the database and in beat's PeriodicTask."""

import json
from datetime import datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_celery_beat.models import PeriodicTask

from projects.tests.factories import MembershipFactory
from runs.choices import Trigger
from runs.models import Run
from schedules import services
from schedules.choices import FireOutcome
from schedules.models import Schedule, ScheduleFire
from schedules.tests.factories import published_workflow
from sparkops.roles import Role
from sparkops.testing import ROLES, client_for
from workflows.services import workflow_create

LIST_URL = "/api/v1/schedules"
ERROR_KEYS = {"status", "code", "message", "errors"}
WRITERS = [(Role.OWNER, True), (Role.ADMIN, True), (Role.DEVELOPER, False), (Role.VIEWER, False)]
BERLIN = ZoneInfo("Europe/Berlin")
HOUR = timedelta(hours=1)


def url(schedule: Schedule | None = None, suffix: str = "") -> str:
    return f"{LIST_URL}/{schedule.pk}{suffix}" if schedule else LIST_URL


def assert_error(response, status: int) -> dict:
    body = response.json()
    assert response.status_code == status, body
    assert set(body) == ERROR_KEYS
    assert body["status"] == status
    return body


def payload(project, workflow, **fields) -> dict:
    return {
        "project": str(project.pk),
        "workflow": str(workflow.pk),
        "name": "Morning digest",
        "cron": "0 9 * * mon-fri",
        "timezone": "Europe/Berlin",
        "inputs": {"topic": "news"},
    } | fields


def task_of(schedule_id) -> PeriodicTask | None:
    return PeriodicTask.objects.select_related("crontab").filter(name=f"schedule:{schedule_id}").first()


def make_schedule(project, workflow, name: str, cron: str = "0 9 * * *") -> Schedule:
    return services.schedule_save(
        schedule=Schedule(project=project, workflow=workflow, name=name, cron=cron, inputs={"topic": "x"})
    )


@pytest.fixture
def workflow(team):
    return published_workflow(team.project)


@pytest.fixture
def schedule(team, workflow):
    return services.schedule_save(
        schedule=Schedule(
            project=team.project,
            workflow=workflow,
            name="Hourly digest",
            cron="0 * * * *",
            timezone="UTC",
            inputs={"topic": "news"},
            created_by=team.members[Role.ADMIN],
        )
    )


@pytest.fixture
def both_projects_admin(team):
    """An admin of the team project who is also an admin of the outsider's project."""
    user = MembershipFactory(project=team.project, role=Role.ADMIN).user
    MembershipFactory(project=team.other_project, user=user, role=Role.ADMIN)
    return user


# ------------------------------------------------------------------------------
# Create
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(("role", "allowed"), WRITERS)
def test_creating_a_schedule_needs_the_admin_role(team, workflow, role, allowed):
    response = team.client(role).post(LIST_URL, payload(team.project, workflow))

    if not allowed:
        assert_error(response, 403)
        assert not Schedule.objects.exists()
        assert not PeriodicTask.objects.exists()
        return
    assert response.status_code == 201, response.json()
    body = response.json()
    schedule = Schedule.objects.get()
    assert body["id"] == str(schedule.pk)
    assert (schedule.name, schedule.cron, schedule.timezone, schedule.inputs) == (
        "Morning digest",
        "0 9 * * mon-fri",
        "Europe/Berlin",
        {"topic": "news"},
    )
    assert schedule.created_by == team.members[role]
    assert (schedule.enabled, schedule.overlap_policy, schedule.catchup_policy) == (True, "skip", "skip_missed")
    assert body["description"] == "At 09:00, Monday through Friday"
    assert body["next_fire_at"] is not None
    next_local = datetime.fromisoformat(body["next_fire_at"]).astimezone(BERLIN)
    assert (next_local.hour, next_local.minute, next_local.isoweekday() <= 5) == (9, 0, True)
    task = task_of(schedule.pk)
    assert (task.task, json.loads(task.args), task.enabled) == ("runs.schedule_fire", [str(schedule.pk)], True)
    assert (task.crontab.minute, task.crontab.hour, str(task.crontab.timezone)) == ("0", "9", "Europe/Berlin")


def test_read_only_fields_are_ignored_on_create(team, workflow):
    body = payload(
        team.project,
        workflow,
        paused_reason="hacked",
        last_fire_at="2020-01-01T00:00:00Z",
        next_fire_at="2020-01-01T00:00:00Z",
        created_by=str(team.members[Role.VIEWER].pk),
    )
    response = team.client(Role.ADMIN).post(LIST_URL, body)
    assert response.status_code == 201, response.json()
    schedule = Schedule.objects.get()
    assert (schedule.paused_reason, schedule.last_fire_at) == ("", None)
    assert schedule.next_fire_at.year >= 2026
    assert schedule.created_by == team.members[Role.ADMIN]


def test_an_outsider_cannot_create_a_schedule_in_the_team_project(team, workflow):
    body = assert_error(team.client("outsider").post(LIST_URL, payload(team.project, workflow)), 400)
    assert "does not exist" in body["errors"]["project"][0]
    assert not Schedule.objects.exists()


def test_an_admin_elsewhere_but_viewer_here_cannot_create_here(team, workflow):
    user = MembershipFactory(project=team.other_project, role=Role.ADMIN).user
    MembershipFactory(project=team.project, user=user, role=Role.VIEWER)
    assert_error(client_for(user).post(LIST_URL, payload(team.project, workflow)), 403)
    assert not Schedule.objects.exists()


def test_a_workflow_the_caller_cannot_see_does_not_exist(team):
    theirs = published_workflow(team.other_project, "theirs")
    body = assert_error(team.client(Role.ADMIN).post(LIST_URL, payload(team.project, theirs)), 400)
    assert "does not exist" in body["errors"]["workflow"][0]
    assert not Schedule.objects.exists()


def test_a_workflow_of_another_project_of_the_caller_is_refused(team, workflow, both_projects_admin):
    theirs = published_workflow(team.other_project, "theirs")
    response = client_for(both_projects_admin).post(LIST_URL, payload(team.project, theirs))
    body = assert_error(response, 400)
    assert body["errors"] == {"workflow": ["The workflow belongs to another project."]}
    assert not Schedule.objects.exists()
    assert not PeriodicTask.objects.exists()


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"cron": "61 * * * *"}, {"cron": ["minute: 61 is outside 0-59."]}),
        ({"cron": "0 9 * *"}, {"cron": ["expression: Five fields are needed (minute hour day month weekday); got 4."]}),
        (
            {"cron": "0 9 * * funday", "timezone": "Mars/Olympus_Mons"},
            {
                "cron": ["day_of_week: 'funday' is not a number or a name."],
                "timezone": ["Unknown timezone 'Mars/Olympus_Mons'; use an IANA name such as Europe/Berlin."],
            },
        ),
        ({"inputs": {"topic": 7}}, {"inputs": ["topic: 7 is not of type 'string'"]}),
        ({"inputs": {}}, {"inputs": ["(inputs): 'topic' is a required property"]}),
        ({"jitter_seconds": 3601}, {"jitter_seconds": ["At most 3600 seconds."]}),
    ],
)
def test_it_answers_400_with_field_level_errors(team, workflow, fields, errors):
    body = assert_error(team.client(Role.ADMIN).post(LIST_URL, payload(team.project, workflow, **fields)), 400)
    assert body["errors"] == errors
    assert body["code"] == "invalid"
    assert not Schedule.objects.exists()
    assert not PeriodicTask.objects.exists()


def test_it_refuses_a_version_pin_of_another_workflow(team, workflow):
    other = published_workflow(team.project, "other")
    response = team.client(Role.ADMIN).post(LIST_URL, payload(team.project, workflow, version=other.versions.get().pk))
    errors = assert_error(response, 400)["errors"]
    assert errors == {"version": ["Pin a published version of this schedule's workflow."]}


def test_it_refuses_a_workflow_with_no_published_version(team, workflow):
    draft = workflow_create(
        project=team.project,
        user=None,
        name="Draft",
        slug="draft",
        definition={"steps": [{"key": "say", "kind": "agent", "agent": "echo", "prompt": "hi"}]},
    )
    response = team.client(Role.ADMIN).post(LIST_URL, payload(team.project, draft, inputs={}))
    assert assert_error(response, 400)["errors"] == {"workflow": ["The workflow has no published version to run."]}


def test_it_refuses_an_unknown_policy(team, workflow):
    response = team.client(Role.ADMIN).post(LIST_URL, payload(team.project, workflow, overlap_policy="sometimes"))
    assert set(assert_error(response, 400)["errors"]) == {"overlap_policy"}


def test_a_pinned_version_is_kept(team, workflow):
    version = workflow.versions.get()
    response = team.client(Role.ADMIN).post(LIST_URL, payload(team.project, workflow, version=version.pk))
    assert response.status_code == 201, response.json()
    assert response.json()["version"] == version.pk
    assert Schedule.objects.get().version == version


# ------------------------------------------------------------------------------
# Read
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_every_member_reads_schedules(team, schedule, role):
    client = team.client(role)
    listed = client.get(LIST_URL)
    assert listed.status_code == 200
    assert [row["id"] for row in listed.json()["results"]] == [str(schedule.pk)]
    detail = client.get(url(schedule))
    assert detail.status_code == 200
    assert detail.json()["description"] == "Every hour"
    assert detail.json()["next_fire_at"] is not None


def test_an_outsider_lists_only_their_own_projects_schedules(team, schedule):
    theirs = published_workflow(team.other_project, "theirs")
    mine = make_schedule(team.other_project, theirs, "Mine", "0 0 * * *")
    response = team.client("outsider").get(LIST_URL)
    assert [row["id"] for row in response.json()["results"]] == [str(mine.pk)]
    assert_error(team.client("outsider").get(LIST_URL, {"project": str(team.project.pk)}), 404)
    assert_error(team.client(Role.ADMIN).get(LIST_URL, {"project": str(team.other_project.pk)}), 404)


def test_lists_filter_by_enabled_and_search_by_name(team, schedule, workflow):
    other = make_schedule(team.project, workflow, "Weekly", "0 9 * * mon")
    services.schedule_set_enabled(schedule=other, enabled=False)
    client = team.client(Role.VIEWER)
    assert [r["name"] for r in client.get(LIST_URL, {"enabled": "false"}).json()["results"]] == ["Weekly"]
    assert [r["name"] for r in client.get(LIST_URL, {"search": "hourly"}).json()["results"]] == ["Hourly digest"]


def test_listing_schedules_takes_a_bounded_number_of_queries(team, workflow):
    client = team.client(Role.VIEWER)

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(LIST_URL)
        assert response.status_code == 200
        return len(queries)

    for n in range(2):
        make_schedule(team.project, workflow, f"S{n}", "0 9 * * *")
    few = count()
    for n in range(2, 12):
        make_schedule(team.project, workflow, f"S{n}", "0 9 * * *")
    assert count() == few
    assert few <= 6


def test_unauthenticated_callers_are_refused(team, schedule, workflow, api_client):
    assert_error(api_client.get(LIST_URL), 401)
    assert_error(api_client.post(LIST_URL, payload(team.project, workflow)), 401)
    assert_error(api_client.get(url(schedule)), 401)
    assert_error(api_client.patch(url(schedule), {"name": "Taken"}), 401)
    assert_error(api_client.delete(url(schedule)), 401)
    for verb in ("/pause", "/resume", "/trigger"):
        assert_error(api_client.post(url(schedule, verb)), 401)
    assert_error(api_client.get(url(schedule, "/preview")), 401)
    assert_error(api_client.get(url(schedule, "/fires")), 401)
    assert Schedule.objects.get().name == "Hourly digest"


def test_an_outsider_can_neither_see_nor_change_a_schedule(team, schedule, workflow):
    outsider = team.client("outsider")
    assert_error(outsider.get(url(schedule)), 404)
    assert_error(outsider.patch(url(schedule), {"name": "Taken"}), 404)
    assert_error(outsider.put(url(schedule), payload(team.project, workflow, name="Taken")), 404)
    assert_error(outsider.delete(url(schedule)), 404)
    for verb in ("/pause", "/resume", "/trigger"):
        assert_error(outsider.post(url(schedule, verb)), 404)
    assert_error(outsider.get(url(schedule, "/preview")), 404)
    assert_error(outsider.get(url(schedule, "/fires")), 404)
    row = Schedule.objects.get()
    assert (row.name, row.enabled) == ("Hourly digest", True)
    assert not ScheduleFire.objects.exists()
    assert task_of(schedule.pk).enabled is True


# ------------------------------------------------------------------------------
# Update and delete
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(("role", "allowed"), WRITERS)
def test_editing_a_schedule_needs_the_admin_role_and_moves_its_task(team, schedule, role, allowed):
    response = team.client(role).patch(url(schedule), {"cron": "30 18 * * fri", "timezone": "America/New_York"})

    row, task = Schedule.objects.get(), task_of(schedule.pk)
    if not allowed:
        assert_error(response, 403)
        assert (row.cron, task.crontab.minute, task.crontab.hour) == ("0 * * * *", "0", "*")
        return
    assert response.status_code == 200, response.json()
    assert response.json()["description"] == "At 18:30, only on Friday"
    assert (row.cron, row.timezone) == ("30 18 * * fri", "America/New_York")
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("30", "18", "fri")
    assert str(task.crontab.timezone) == "America/New_York"
    next_local = row.next_fire_at.astimezone(ZoneInfo("America/New_York"))
    assert (next_local.isoweekday(), next_local.hour, next_local.minute) == (5, 18, 30)


def test_an_invalid_edit_changes_nothing(team, schedule):
    body = assert_error(team.client(Role.ADMIN).patch(url(schedule), {"cron": "0 25 * * *"}), 400)
    assert body["errors"] == {"cron": ["hour: 25 is outside 0-23."]}
    assert Schedule.objects.get().cron == "0 * * * *"
    assert task_of(schedule.pk).crontab.hour == "*"


def test_disabling_through_an_edit_disables_its_task(team, schedule):
    response = team.client(Role.ADMIN).patch(url(schedule), {"enabled": False})
    assert response.status_code == 200
    assert response.json()["next_fire_at"] is None
    assert Schedule.objects.get().enabled is False
    assert task_of(schedule.pk).enabled is False


def test_the_project_of_a_schedule_does_not_move(team, schedule, both_projects_admin):
    client = client_for(both_projects_admin)
    response = client.patch(url(schedule), {"project": str(team.other_project.pk), "name": "Renamed"})
    assert response.status_code == 200, response.json()
    row = Schedule.objects.get()
    assert (row.project_id, row.name) == (team.project.pk, "Renamed")


def test_replacing_a_schedule_with_put(team, schedule, workflow):
    response = team.client(Role.OWNER).put(
        url(schedule), payload(team.project, workflow, name="Replaced", cron="15 6 * * *", timezone="UTC")
    )
    assert response.status_code == 200, response.json()
    assert (Schedule.objects.get().name, task_of(schedule.pk).crontab.minute) == ("Replaced", "15")


@pytest.mark.parametrize(("role", "allowed"), WRITERS)
def test_deleting_a_schedule_needs_the_admin_role_and_removes_its_task(team, schedule, role, allowed):
    response = team.client(role).delete(url(schedule))
    if not allowed:
        assert_error(response, 403)
        assert Schedule.objects.filter(pk=schedule.pk).exists()
        assert task_of(schedule.pk) is not None
        return
    assert response.status_code == 204
    assert not Schedule.objects.exists()
    assert task_of(schedule.pk) is None
    assert not PeriodicTask.objects.filter(name__startswith="schedule:").exists()


# ------------------------------------------------------------------------------
# Pause, resume, trigger
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(("role", "allowed"), WRITERS)
def test_pausing_and_resuming_need_the_admin_role(team, schedule, role, allowed):
    client = team.client(role)
    paused = client.post(url(schedule, "/pause"))
    if not allowed:
        assert_error(paused, 403)
        assert_error(client.post(url(schedule, "/resume")), 403)
        assert Schedule.objects.get().enabled is True
        assert task_of(schedule.pk).enabled is True
        return
    assert paused.status_code == 200
    assert (paused.json()["enabled"], paused.json()["paused_reason"], paused.json()["next_fire_at"]) == (
        False,
        "Paused by a person.",
        None,
    )
    row = Schedule.objects.get()
    assert (row.enabled, row.paused_reason) == (False, "Paused by a person.")
    assert task_of(schedule.pk).enabled is False

    resumed = client.post(url(schedule, "/resume"))
    assert resumed.status_code == 200
    assert (resumed.json()["enabled"], resumed.json()["paused_reason"]) == (True, "")
    assert resumed.json()["next_fire_at"] is not None
    row = Schedule.objects.get()
    assert (row.enabled, row.paused_reason) == (True, "")
    assert row.last_fire_at is not None  # missed slots are not replayed
    assert task_of(schedule.pk).enabled is True


@pytest.mark.parametrize(("role", "allowed"), WRITERS)
def test_triggering_needs_the_admin_role_and_starts_a_manual_run(team, schedule, role, allowed):
    response = team.client(role).post(url(schedule, "/trigger"))
    if not allowed:
        assert_error(response, 403)
        assert not ScheduleFire.objects.exists()
        assert not Run.objects.exists()
        return
    assert response.status_code == 201, response.json()
    body = response.json()
    fire, run = ScheduleFire.objects.get(), Run.objects.get()
    assert body["id"] == fire.pk
    assert (body["outcome"], body["manual"], body["run"]) == ("started", True, str(run.pk))
    assert (fire.outcome, fire.manual, fire.run_id) == (FireOutcome.STARTED, True, run.pk)
    assert (run.trigger, run.inputs, run.workflow_id) == (Trigger.SCHEDULE, {"topic": "news"}, schedule.workflow_id)


def test_a_trigger_that_cannot_start_a_run_is_recorded_as_failed(team, schedule, workflow):
    workflow.active = False
    workflow.save(update_fields=["active"])
    response = team.client(Role.ADMIN).post(url(schedule, "/trigger"))
    assert response.status_code == 201
    assert (response.json()["outcome"], response.json()["reason"]) == ("failed", "workflow: The workflow is inactive.")
    assert ScheduleFire.objects.get().outcome == FireOutcome.FAILED
    assert not Run.objects.exists()


# ------------------------------------------------------------------------------
# Preview
# ------------------------------------------------------------------------------
def test_preview_lists_the_next_n_fires_in_local_time_and_utc(team, workflow):
    schedule = services.schedule_save(
        schedule=Schedule(
            project=team.project,
            workflow=workflow,
            name="Weekdays",
            cron="0 9 * * mon-fri",
            timezone="Europe/Berlin",
            inputs={"topic": "x"},
        )
    )
    response = team.client(Role.VIEWER).get(url(schedule, "/preview"), {"n": 5})

    assert response.status_code == 200
    body = response.json()
    assert body["timezone"] == "Europe/Berlin"
    assert len(body["fires"]) == 5
    local = [datetime.fromisoformat(entry["local"]) for entry in body["fires"]]
    utc = [datetime.fromisoformat(entry["utc"]) for entry in body["fires"]]
    assert local == utc
    assert all(moment.utcoffset() == moment.astimezone(BERLIN).utcoffset() for moment in local)
    assert all((m.hour, m.minute, m.isoweekday() <= 5) == (9, 0, True) for m in local)
    assert all(moment.utcoffset() == timedelta(0) for moment in utc)
    assert utc == sorted(set(utc))
    assert utc[0] == Schedule.objects.get().next_fire_at


def test_preview_lists_ten_by_default(team, schedule):
    fires = team.client(Role.VIEWER).get(url(schedule, "/preview")).json()["fires"]
    assert len(fires) == 10
    assert [datetime.fromisoformat(b["utc"]) - datetime.fromisoformat(a["utc"]) for a, b in pairwise(fires)] == [
        HOUR
    ] * 9


BAD_COUNTS = [("0", "Between 1 and 100."), ("101", "Between 1 and 100."), ("abc", "A whole number.")]


@pytest.mark.parametrize(("n", "message"), BAD_COUNTS)
def test_preview_refuses_a_bad_n(team, schedule, n, message):
    body = assert_error(team.client(Role.VIEWER).get(url(schedule, "/preview"), {"n": n}), 400)
    assert body["errors"] == {"n": [message]}


# ------------------------------------------------------------------------------
# The fire ledger
# ------------------------------------------------------------------------------
@pytest.fixture
def ledger(schedule):
    """Five fires, newest last: started, skipped for overlap, then three skipped as late."""
    first = schedule.next_fire_at
    services.fire(schedule_id=schedule.pk, now=first + timedelta(seconds=1))
    services.fire(schedule_id=schedule.pk, now=first + HOUR + timedelta(seconds=1))
    services.fire(schedule_id=schedule.pk, now=first + 4 * HOUR + timedelta(minutes=10))
    return first


@pytest.mark.parametrize("role", ROLES)
def test_every_member_reads_the_fire_ledger_newest_first_paginated(team, schedule, ledger, role):
    response = team.client(role).get(url(schedule, "/fires"), {"page_size": 2})

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 5
    assert body["next"] is not None
    assert [(row["nominal_time"], row["outcome"]) for row in body["results"]] == [
        ((ledger + 4 * HOUR).isoformat().replace("+00:00", "Z"), "skipped_late"),
        ((ledger + 3 * HOUR).isoformat().replace("+00:00", "Z"), "skipped_late"),
    ]
    assert set(body["results"][0]) == {"id", "nominal_time", "outcome", "reason", "manual", "run", "created_at"}
    last_page = team.client(role).get(url(schedule, "/fires"), {"page_size": 2, "page": 3}).json()
    assert [row["outcome"] for row in last_page["results"]] == ["started"]
    assert last_page["results"][0]["run"] == str(Run.objects.get().pk)


def test_the_fire_ledger_filters_by_outcome(team, schedule, ledger):
    client = team.client(Role.VIEWER)
    late = client.get(url(schedule, "/fires"), {"outcome": "skipped_late"}).json()
    assert late["count"] == 3
    assert {row["reason"] for row in late["results"]} == {"Missed while no scheduler was firing.", "600s late."}
    overlap = client.get(url(schedule, "/fires"), {"outcome": "skipped_overlap"}).json()
    assert [row["reason"] for row in overlap["results"]] == ["A run of this schedule is still active."]
    assert client.get(url(schedule, "/fires"), {"outcome": "buffered"}).json()["count"] == 0


def test_the_fire_ledger_shows_only_this_schedules_fires(team, schedule, ledger, workflow):
    other = make_schedule(team.project, workflow, "Other", "0 * * * *")
    services.trigger(schedule=other)
    assert team.client(Role.VIEWER).get(url(schedule, "/fires")).json()["count"] == 5
    assert team.client(Role.VIEWER).get(url(other, "/fires")).json()["count"] == 1
