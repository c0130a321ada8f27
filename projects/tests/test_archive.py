"""Archived projects are read-only, and a project with run history is archived, not deleted."""

import pytest

from accounts.tests.factories import ApiKeyFactory, UserFactory
from projects.models import Membership, Project
from runs.models import Run
from runs.tests.factories import approval_step, make_catalog, make_workflow, start
from sparkops.roles import Role
from sparkops.testing import client_for

PROJECTS = "/api/v1/projects"
ERROR_KEYS = {"status", "code", "message", "errors"}


def project_url(project) -> str:
    return f"{PROJECTS}/{project.pk}"


def assert_error(response, status: int) -> dict:
    body = response.json()
    assert response.status_code == status, body
    assert set(body) == ERROR_KEYS
    assert body["status"] == status
    return body


@pytest.fixture
def workflow(team):
    make_catalog(team.project)
    return make_workflow(team.project)


@pytest.fixture
def archived(team, workflow):
    Project.objects.filter(pk=team.project.pk).update(archived=True)
    return team.project


def test_deleting_a_project_with_runs_is_refused_and_points_to_archiving(team, workflow):
    start(workflow)
    body = assert_error(team.client("owner").delete(project_url(team.project)), 409)
    assert body["code"] == "project_has_runs"
    assert "archive" in body["message"]
    assert Project.objects.filter(pk=team.project.pk).exists()
    assert Run.objects.filter(project=team.project).count() == 1


def test_deleting_a_project_with_no_runs_removes_it_and_its_workflows(team, workflow):
    assert team.client("owner").delete(project_url(team.project)).status_code == 204
    assert not Project.objects.filter(pk=team.project.pk).exists()
    assert not type(workflow).objects.filter(pk=workflow.pk).exists()


def test_an_archived_project_with_no_runs_can_still_be_deleted(team, archived):
    assert team.client("owner").delete(project_url(archived)).status_code == 204


def test_an_archived_project_refuses_new_runs(team, archived, workflow):
    response = team.client("developer").post("/api/v1/runs", {"workflow": str(workflow.pk), "inputs": {"name": "A"}})
    body = assert_error(response, 409)
    assert body["code"] == "project_archived"
    assert not Run.objects.exists()


def test_an_archived_project_refuses_edits_to_what_it_holds(team, archived, workflow):
    response = team.client("developer").patch(f"/api/v1/workflows/{workflow.pk}", {"name": "Renamed"})
    assert assert_error(response, 409)["code"] == "project_archived"
    workflow.refresh_from_db()
    assert workflow.name != "Renamed"


def test_an_archived_project_refuses_new_objects(team, archived):
    body = {"project": str(archived.pk), "name": "Calc", "slug": "calc2", "kind": "builtin"}
    body["config"] = {"function": "arithmetic"}
    assert_error(team.client("developer").post("/api/v1/tools", body), 409)


def test_an_archived_project_refuses_deletes_inside_it(team, archived, workflow):
    assert_error(team.client("developer").delete(f"/api/v1/workflows/{workflow.pk}"), 409)
    assert type(workflow).objects.filter(pk=workflow.pk).exists()


def test_an_archived_project_still_answers_reads(team, archived, workflow):
    assert team.client("viewer").get(f"/api/v1/workflows/{workflow.pk}").status_code == 200
    assert team.client("viewer").get(project_url(archived)).json()["archived"] is True


def test_an_archived_project_refuses_edits_to_itself(team, archived):
    body = assert_error(team.client("admin").patch(project_url(archived), {"name": "Renamed"}), 409)
    assert "unarchive" in body["message"].lower()
    archived.refresh_from_db()
    assert archived.name != "Renamed"


@pytest.mark.parametrize("role", [Role.ADMIN, Role.OWNER])
def test_an_admin_can_unarchive_and_then_write_again(team, archived, workflow, role):
    response = team.client(role).patch(project_url(archived), {"archived": False})
    assert response.status_code == 200, response.json()
    archived.refresh_from_db()
    assert archived.archived is False
    response = team.client("developer").post("/api/v1/runs", {"workflow": str(workflow.pk), "inputs": {"name": "A"}})
    assert response.status_code == 201, response.json()


def test_a_developer_cannot_unarchive(team, archived):
    assert_error(team.client("developer").patch(project_url(archived), {"archived": False}), 403)
    archived.refresh_from_db()
    assert archived.archived is True


def test_members_can_still_be_managed_in_an_archived_project(team, archived):
    newcomer = UserFactory()
    body = {"project": str(archived.pk), "email": newcomer.email, "role": Role.VIEWER}
    assert team.client("admin").post("/api/v1/memberships", body).status_code == 201
    assert Membership.objects.filter(project=archived, user=newcomer).exists()


def test_a_run_in_flight_can_still_be_cancelled_in_an_archived_project(team, workflow):
    run = start(make_workflow(team.project, approval_step("gate"), slug="gated"))
    Project.objects.filter(pk=team.project.pk).update(archived=True)
    response = team.client("developer").post(f"/api/v1/runs/{run.pk}/cancel")
    assert response.status_code == 200, response.json()


def test_an_api_key_is_told_keys_cannot_create_projects(team):
    key = ApiKeyFactory(project=team.project, created_by=team.members[Role.OWNER], role=Role.OWNER)
    body = assert_error(client_for(api_key=key.raw).post(PROJECTS, {"name": "Key-made"}), 403)
    assert body["message"] == "API keys cannot create projects; authenticate as a user."
    assert not Project.objects.filter(name="Key-made").exists()
