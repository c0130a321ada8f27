"""The kill switch, with the engine running: a freeze pauses the project's schedules (and remembers
which), cancels its active runs, refuses new runs, retries and fires with 409 project_frozen, and
may revoke its keys; the unfreeze resumes only the schedules the freeze paused."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import ApiKey
from accounts.tests.factories import ApiKeyFactory
from audit.models import AuditEntry
from runs.choices import RunStatus
from runs.models import Run
from runs.tests.factories import agent_step, approval_step, make_workflow, start, stocked
from schedules import services as schedule_services
from schedules.choices import FireOutcome
from schedules.models import Schedule
from sparkops.roles import Role
from sparkops.testing import client_for

API = "/api/v1"


@pytest.fixture
def project(engine, team):
    return stocked(team.project)


@pytest.fixture
def gated(project):
    return make_workflow(project, approval_step("gate"), agent_step("after", depends_on=["gate"]), slug="gated")


def schedule(project, workflow, name: str, enabled: bool = True) -> Schedule:
    made = schedule_services.schedule_save(
        schedule=Schedule(project=project, workflow=workflow, name=name, cron="0 * * * *", inputs={"name": "Ada"})
    )
    return made if enabled else schedule_services.schedule_set_enabled(schedule=made, enabled=False, reason="by hand")


def freeze(team, who=Role.ADMIN, **body):
    return team.client(who).post(f"{API}/projects/{team.project.pk}/freeze", {"reason": "runaway spend", **body})


def test_freeze_stops_everything_and_unfreeze_restores_what_it_paused(team, project, gated):
    hourly, manual = schedule(project, gated, "Hourly"), schedule(project, gated, "Paused before", enabled=False)
    waiting = start(gated)
    assert waiting.status == RunStatus.WAITING_APPROVAL  # the engine ran it up to its gate

    response = freeze(team)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["schedules"] == [str(hourly.pk)]
    assert body["runs_cancelled"] == [str(waiting.pk)]
    waiting.refresh_from_db()
    assert waiting.status == RunStatus.CANCELLED  # the engine finished the cancel
    hourly.refresh_from_db()
    assert (hourly.enabled, hourly.paused_by_freeze) == (False, True)
    assert "runaway spend" in hourly.paused_reason

    # Nothing new starts, through any door, and the refusal names the freeze.
    developer = team.client(Role.DEVELOPER)
    refused = developer.post(f"{API}/runs", {"workflow": str(gated.pk), "inputs": {"name": "Ada"}}, format="json")
    assert refused.status_code == 409
    assert refused.json()["code"] == "project_frozen"
    assert "is frozen" in refused.json()["message"]
    assert "runaway spend" in refused.json()["message"]
    assert developer.post(f"{API}/workflows/{gated.pk}/run", {"inputs": {"name": "Ada"}}).status_code == 409
    writer = project.agents.get(slug="writer")
    assert developer.post(f"{API}/agents/{writer.pk}/start-task", {"title": "Go"}).status_code == 409
    assert developer.post(f"{API}/runs/{waiting.pk}/retry").json()["code"] == "project_frozen"
    assert team.client(Role.ADMIN).post(f"{API}/schedules/{hourly.pk}/resume").status_code == 409
    fire = schedule_services.trigger(schedule=hourly)
    assert fire.outcome == FireOutcome.BLOCKED
    assert "frozen" in fire.reason
    slot = schedule_services.fire(schedule_id=hourly.pk, now=timezone.now() + timedelta(hours=1))
    assert slot.outcome == FireOutcome.SKIPPED_PAUSED
    assert "runaway spend" in slot.reason
    assert Run.objects.filter(project=project).count() == 1

    response = team.client(Role.OWNER).post(f"{API}/projects/{team.project.pk}/unfreeze")
    assert response.status_code == 200, response.json()
    assert response.json()["schedules"] == [str(hourly.pk)]
    hourly.refresh_from_db()
    manual.refresh_from_db()
    assert (hourly.enabled, hourly.paused_by_freeze, hourly.paused_reason) == (True, False, "")
    assert (manual.enabled, manual.paused_reason) == (False, "by hand")  # paused before: stays paused
    assert developer.post(f"{API}/workflows/{gated.pk}/run", {"inputs": {"name": "Ada"}}).status_code == 201

    trail = list(AuditEntry.objects.filter(object_id=str(project.pk), action__in=["freeze", "unfreeze"]))
    assert [(e.action, e.actor_user) for e in trail] == [
        ("unfreeze", team.members[Role.OWNER]),
        ("freeze", team.members[Role.ADMIN]),
    ]
    assert AuditEntry.objects.filter(action="cancel", object_id=str(waiting.pk), actor_user=team.members[Role.ADMIN])


def test_freeze_may_revoke_the_projects_keys_but_not_through_a_key(team, project):
    key = ApiKeyFactory(project=team.project, created_by=team.members[Role.OWNER], role=Role.ADMIN)
    other = ApiKeyFactory(project=team.other_project, created_by=team.outsider)
    assert freeze(team, revoke_api_keys=True).json()["api_keys_revoked"] == [str(key.pk)]
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
    assert ApiKey.objects.get(pk=other.pk).revoked_at is None
    team.client(Role.ADMIN).post(f"{API}/projects/{team.project.pk}/unfreeze")
    fresh = ApiKeyFactory(project=team.project, created_by=team.members[Role.OWNER], role=Role.ADMIN)
    by_key = client_for(api_key=fresh.raw).post(
        f"{API}/projects/{team.project.pk}/freeze", {"reason": "x", "revoke_api_keys": True}
    )
    assert by_key.status_code == 403
    assert ApiKey.objects.get(pk=fresh.pk).revoked_at is None


def test_freezing_twice_or_unfreezing_an_active_project_is_a_conflict(team, project):
    assert team.client(Role.ADMIN).post(f"{API}/projects/{team.project.pk}/unfreeze").status_code == 409
    assert freeze(team).status_code == 200
    assert freeze(team).status_code == 409


@pytest.mark.parametrize("who", [Role.DEVELOPER, Role.VIEWER])
def test_only_admins_and_owners_freeze(team, project, who):
    assert freeze(team, who=who).status_code == 403
    assert team.client("outsider").post(f"{API}/projects/{team.project.pk}/freeze", {"reason": "x"}).status_code == 404


def test_a_reason_is_required(team, project):
    response = team.client(Role.ADMIN).post(f"{API}/projects/{team.project.pk}/freeze", {})
    assert response.status_code == 400
    assert "reason" in response.json()["errors"]


def test_the_admin_freezes_after_a_confirmation_page(team, project, gated, client):
    hourly = schedule(project, gated, "Hourly")
    staff = team.members[Role.OWNER]
    staff.is_staff = staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    changelist = "/admin/projects/project/"
    asked = client.post(changelist, {"action": "freeze", "_selected_action": [str(project.pk)]})
    assert asked.status_code == 200
    assert b"Yes, freeze" in asked.content
    hourly.refresh_from_db()
    assert hourly.enabled  # nothing happens before the confirmation

    done = client.post(
        changelist,
        {"action": "freeze", "_selected_action": [str(project.pk)], "confirm": "yes", "reason": "incident 7"},
    )
    assert done.status_code == 302
    project.refresh_from_db()
    hourly.refresh_from_db()
    assert (project.frozen_reason, hourly.enabled) == ("incident 7", False)
    entry = AuditEntry.objects.get(action="freeze", object_id=str(project.pk))
    assert (entry.channel, entry.actor_user) == ("admin", staff)

    client.post(changelist, {"action": "unfreeze", "_selected_action": [str(project.pk)]})
    hourly.refresh_from_db()
    assert hourly.enabled
