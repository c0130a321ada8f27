"""The trail: who changed what through which channel, with the diff, for each audited kind."""

import pytest
from django.core.management import call_command

from accounts.tests.factories import ApiKeyFactory
from agents.models import ProviderCredential
from agents.tests.factories import AgentFactory, ToolFactory
from audit.models import AuditEntry
from policies.tests.factories import PolicyFactory
from runs.choices import EventType
from runs.tests.factories import approval_step, events, make_catalog, make_workflow, start
from schedules import services as schedule_services
from schedules.models import Schedule
from schedules.tests.factories import published_workflow
from sparkops.lib import crypto
from sparkops.roles import Role
from sparkops.testing import client_for

pytestmark = pytest.mark.django_db
API = "/api/v1"


def last(**filters) -> AuditEntry:
    return AuditEntry.objects.filter(**filters).order_by("-id").first()


def test_an_api_change_records_actor_channel_diff_address_and_request_id(team):
    agent = AgentFactory(project=team.project, model="gpt-4o")
    response = team.client(Role.DEVELOPER).patch(
        f"{API}/agents/{agent.pk}", {"model": "gpt-4o-mini"}, format="json", HTTP_X_REQUEST_ID="req-42"
    )
    assert response.status_code == 200, response.json()
    entry = last(object_type="agents.agent", action="update")
    assert entry.actor_user == team.members[Role.DEVELOPER]
    assert entry.actor_label == team.members[Role.DEVELOPER].email
    assert (entry.channel, entry.project_id, entry.object_id) == ("api", team.project.pk, str(agent.pk))
    assert entry.changes == {"model": ["gpt-4o", "gpt-4o-mini"]}
    assert (entry.client_address, entry.request_id) == ("127.0.0.1", "req-42")


def test_a_request_without_an_id_gets_one_the_logs_and_the_response_share(team):
    body = {"project": str(team.project.pk), "name": "Calc", "slug": "calc", "kind": "builtin"}
    response = team.client(Role.DEVELOPER).post(
        f"{API}/tools", {**body, "config": {"function": "arithmetic"}}, format="json"
    )
    entry = last(object_type="agents.tool", action="create")
    assert len(entry.request_id) == 36
    assert entry.request_id == response["X-Request-ID"]
    assert entry.changes["slug"] == [None, "calc"]


def test_an_api_key_is_the_actor_when_a_program_acts(team):
    owner = team.members[Role.OWNER]
    key = ApiKeyFactory(project=team.project, created_by=owner, role=Role.ADMIN)
    response = client_for(api_key=key.raw).post(
        f"{API}/credentials",
        {"project": str(team.project.pk), "name": "OpenAI", "provider": "openai", "secret": "sk-live-123"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    entry = last(object_type="agents.providercredential", action="create")
    assert (entry.actor_api_key_id, entry.actor_user_id) == (key.pk, owner.pk)
    assert entry.actor_label.startswith(f"API key {key.name} (")
    # The secret is never written down: that it was set is.
    assert entry.changes["secret_encrypted"] == [None, "[redacted]"]
    assert "sk-live-123" not in str(AuditEntry.objects.values_list("changes", flat=True))


def test_a_secret_change_is_recorded_as_changed_without_values(team):
    credential = ProviderCredential(project=team.project, name="k", provider="openai")
    credential.set_secret("sk-old")
    credential.save()
    response = team.client(Role.ADMIN).patch(f"{API}/credentials/{credential.pk}", {"secret": "sk-new"}, format="json")
    assert response.status_code == 200, response.json()
    assert last(object_type="agents.providercredential", action="update").changes == {
        "secret_encrypted": ["[redacted]", "[redacted]"]
    }


def test_membership_changes_and_key_revocation_are_recorded(team):
    admin = team.client(Role.ADMIN)
    membership = team.project.memberships.get(user=team.members[Role.VIEWER])
    assert admin.patch(f"{API}/memberships/{membership.pk}", {"role": "developer"}, format="json").status_code == 200
    assert last(object_type="projects.membership").changes == {"role": ["viewer", "developer"]}
    key = ApiKeyFactory(project=team.project, created_by=team.members[Role.DEVELOPER])
    assert admin.delete(f"{API}/api-keys/{key.pk}").status_code == 204
    entry = last(object_type="accounts.apikey", action="revoke")
    assert entry.actor_user == team.members[Role.ADMIN]
    assert entry.changes["revoked_at"][0] is None
    assert admin.delete(f"{API}/memberships/{membership.pk}").status_code == 204
    assert last(object_type="projects.membership", action="delete").object_id == str(membership.pk)


def test_projects_policies_workflows_and_schedules_are_recorded(team):
    admin = team.client(Role.ADMIN)
    assert admin.patch(f"{API}/projects/{team.project.pk}", {"description": "new"}, format="json").status_code == 200
    assert last(object_type="projects.project").changes == {"description": ["", "new"]}
    policy = PolicyFactory(project=team.project, enabled=True)
    assert admin.patch(f"{API}/policies/{policy.pk}", {"enabled": False}, format="json").status_code == 200
    assert last(object_type="policies.policy").changes == {"enabled": [True, False]}
    workflow = published_workflow(team.project)
    assert last(object_type="workflows.workflow", action="create").object_id == str(workflow.pk)
    body = {"project": str(team.project.pk), "workflow": str(workflow.pk), "name": "Nightly", "cron": "0 3 * * *"}
    response = admin.post(f"{API}/schedules", {**body, "inputs": {"topic": "x"}}, format="json")
    assert response.status_code == 201, response.json()
    schedule_id = response.json()["id"]
    assert admin.post(f"{API}/schedules/{schedule_id}/pause", {"reason": "x"}, format="json").status_code == 200
    entry = last(object_type="schedules.schedule", action="update")
    assert entry.changes["enabled"] == [True, False]
    assert entry.object_id == schedule_id


def test_a_management_command_acts_on_the_command_channel(team, settings):
    old, new = crypto.generate_key(), crypto.generate_key()
    settings.SPARKOPS_ENCRYPTION_KEYS = [old]
    credential = ProviderCredential(project=team.project, name="k", provider="echo")
    credential.set_secret("sk-live-123")
    credential.save()
    settings.SPARKOPS_ENCRYPTION_KEYS = [new, old]
    call_command("rotate_secrets")
    entry = last(object_type="agents.providercredential", action="update")
    assert (entry.channel, entry.actor_label, entry.actor_user) == ("command", "manage.py rotate_secrets", None)
    assert entry.changes == {"secret_encrypted": ["[redacted]", "[redacted]"]}


def test_an_admin_action_acts_on_the_admin_channel(team, client):
    staff = team.members[Role.OWNER]
    staff.is_staff = staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    schedule = make_schedule(team)
    response = client.post(
        "/admin/schedules/schedule/",
        {"action": "disable", "_selected_action": [str(schedule.pk)]},
        REMOTE_ADDR="10.1.2.3",
    )
    assert response.status_code == 302
    entry = last(object_type="schedules.schedule", object_id=str(schedule.pk), action="pause")
    assert (entry.channel, entry.actor_user, entry.client_address) == ("admin", staff, "10.1.2.3")
    assert entry.changes == {"enabled": [True, False]}


def make_schedule(team) -> Schedule:
    return schedule_services.schedule_save(
        schedule=Schedule(project=team.project, workflow=published_workflow(team.project), name="Hourly",
                          cron="0 * * * *", inputs={"topic": "news"}, created_by=team.members[Role.ADMIN])
    )  # fmt: skip


@pytest.fixture
def gate_run(team):
    make_catalog(team.project)
    workflow = make_workflow(team.project, approval_step("gate"), slug="gated")
    return start(workflow)


def test_cancel_and_decisions_carry_the_actor_in_run_events_and_the_trail(
    team, gate_run, django_capture_on_commit_callbacks
):
    key = ApiKeyFactory(project=team.project, created_by=team.members[Role.OWNER], role=Role.ADMIN)
    run = gate_run
    run.status = "waiting_approval"
    run.save(update_fields=["status"])
    run.steps.filter(key="gate").update(status="waiting_approval")
    response = team.client(Role.ADMIN).post(f"{API}/runs/{run.pk}/steps/gate/reject", {"comment": "no"}, format="json")
    assert response.status_code == 200, response.json()
    rejected = events(run, EventType.STEP_REJECTED)[0]
    admin = team.members[Role.ADMIN]
    assert rejected.payload["actor"] == {"user_id": str(admin.pk), "email": admin.email}
    assert last(action="reject").changes == {"steps.gate": ["waiting_approval", "rejected"]}

    other = start(run.workflow)
    response = client_for(api_key=key.raw).post(f"{API}/runs/{other.pk}/cancel")
    assert response.status_code in (200, 202), response.json()
    cancelling = events(other, EventType.RUN_CANCELLING)[0]
    assert cancelling.payload["by"]["api_key_id"] == str(key.pk)
    assert cancelling.payload["by"]["api_key_name"] == key.name
    entry = last(action="cancel")
    assert (entry.object_id, entry.actor_api_key_id) == (str(other.pk), key.pk)


def test_an_agents_tool_list_is_recorded_as_ids_before_and_after(team):
    agent = AgentFactory(project=team.project)
    calc = ToolFactory(project=team.project)
    response = team.client(Role.DEVELOPER).patch(f"{API}/agents/{agent.pk}", {"tools": [str(calc.pk)]}, format="json")
    assert response.status_code == 200, response.json()
    assert last(object_type="agents.agent", action="update").changes == {"tools": [[], [str(calc.pk)]]}


def test_publishing_a_version_is_recorded(team):
    make_catalog(team.project)
    workflow = make_workflow(team.project, slug="draft", publish=False)
    version = workflow.versions.get()
    response = team.client(Role.DEVELOPER).post(f"{API}/workflows/{workflow.pk}/versions/1/publish")
    assert response.status_code == 200, response.json()
    entry = last(object_type="workflows.workflowversion", action="update")
    assert (entry.object_id, entry.changes) == (str(version.pk), {"published": [False, True]})


def test_webhook_endpoints_are_recorded_without_their_url_or_secret(team):
    admin = team.client(Role.ADMIN)
    body = {"project": str(team.project.pk), "url": "https://hooks.example.com/T0/B0/s3cret", "description": "pager"}
    response = admin.post(f"{API}/webhooks", {**body, "event_types": ["run.failed"]}, format="json")
    assert response.status_code == 201, response.json()
    created = last(object_type="webhooks.endpoint", action="create")
    assert (created.actor_user, created.channel) == (team.members[Role.ADMIN], "api")
    assert created.changes["url"] == [None, "[redacted]"]
    assert created.changes["secret_encrypted"] == [None, "[redacted]"]
    response = admin.patch(f"{API}/webhooks/{created.object_id}", {"enabled": False}, format="json")
    assert response.status_code == 200, response.json()
    assert last(object_type="webhooks.endpoint", action="update").changes == {"enabled": [True, False]}
    assert "s3cret" not in str(AuditEntry.objects.values_list("changes", flat=True))
