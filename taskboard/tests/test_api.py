"""/api/v1/tasks, /api/v1/sandboxes and /agents/{id}/start-task: what each answers and writes.
Who may call them is test_role_matrix's."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents.models import Agent, ProviderCredential
from runs.choices import RunStatus
from runs.models import Run
from runs.tests.factories import echo_agent, make_catalog
from sparkops.roles import Role
from taskboard import services
from taskboard.choices import SandboxStatus, TaskStatus
from taskboard.models import GitOperation, Sandbox, Task

TASKS, SANDBOXES = "/api/v1/tasks", "/api/v1/sandboxes"


@pytest.fixture
def catalog(team):
    return make_catalog(team.project)


@pytest.fixture
def dev(team):
    return team.client(Role.DEVELOPER)


def create(dev, team, **body):
    response = dev.post(TASKS, {"project": str(team.project.pk), "title": "Fix it", **body}, format="json")
    assert response.status_code == 201, response.json()
    return Task.objects.get(pk=response.json()["id"])


def ids(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return [row["id"] for row in response.json()["results"]]


# ------------------------------------------------------------------------------
# Create, edit while pending, start, cancel
# ------------------------------------------------------------------------------
def test_a_created_task_is_pending_with_its_creator(team, dev, catalog):
    task = create(dev, team, agent=str(catalog.writer.pk), priority="urgent", repository_url="https://github.com/a/b")
    assert (task.status, task.priority, task.agent, task.created_by) == (
        TaskStatus.PENDING,
        "urgent",
        catalog.writer,
        team.members[Role.DEVELOPER],
    )
    assert not Run.objects.exists()


def test_create_refuses_an_agent_of_another_project_and_a_bad_priority(team, dev):
    stranger = echo_agent(team.other_project, "stranger")
    body = {"project": str(team.project.pk), "title": "x", "agent": str(stranger.pk), "priority": "asap"}
    errors = dev.post(TASKS, body, format="json").json()["errors"]
    assert set(errors) == {"agent", "priority"}
    assert not Task.objects.exists()


@pytest.mark.parametrize(
    ("url", "local", "message"),
    [
        ("/srv/git/shop.git", False, 'An https URL, e.g. "https://github.com/acme/shop.git".'),
        ("file:///srv/git/shop.git", True, 'An https URL, e.g. "https://github.com/acme/shop.git".'),
        ("git@github.com:acme/shop.git", False, 'An https URL, e.g. "https://github.com/acme/shop.git".'),
    ],
)
def test_create_refuses_urls_git_must_not_clone(team, dev, settings, url, local, message):
    settings.SPARKOPS_TASK_LOCAL_REPOSITORIES = local
    body = {"project": str(team.project.pk), "title": "x", "repository_url": url}
    assert dev.post(TASKS, body, format="json").json()["errors"] == {"repository_url": [message]}


def test_create_refuses_credentials_in_the_url_and_a_credential_that_is_not_githubs(team, dev):
    openai = ProviderCredential.objects.create(project=team.project, name="OpenAI", provider="openai")
    body = {"project": str(team.project.pk), "title": "x", "repository_url": "https://tok@github.com/a/b"}
    response = dev.post(TASKS, {**body, "credential": str(openai.pk)}, format="json")
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"repository_url", "credential"}


def test_a_pending_task_is_edited_and_a_started_one_is_not(team, dev, catalog):
    task = create(dev, team)
    response = dev.patch(f"{TASKS}/{task.pk}", {"title": "Fix it well", "agent": str(catalog.writer.pk)}, format="json")
    assert response.status_code == 200, response.json()
    assert dev.post(f"{TASKS}/{task.pk}/start").status_code == 200

    response = dev.patch(f"{TASKS}/{task.pk}", {"title": "Too late"}, format="json")

    assert response.status_code == 409
    task.refresh_from_db()
    assert (task.title, task.status, task.agent) == ("Fix it well", TaskStatus.IN_PROGRESS, catalog.writer)


def test_starting_needs_an_assignee_and_happens_once(team, dev, catalog):
    task = create(dev, team)
    assert dev.post(f"{TASKS}/{task.pk}/start").json()["errors"] == {
        "agent": ["Assign an agent before starting the task."]
    }
    dev.patch(f"{TASKS}/{task.pk}", {"agent": str(catalog.writer.pk)}, format="json")

    started = dev.post(f"{TASKS}/{task.pk}/start")

    assert started.status_code == 200
    body = started.json()
    assert body["status"] == "in_progress"
    assert len(body["runs"]) == 1
    assert dev.post(f"{TASKS}/{task.pk}/start").status_code == 409
    agent = dev.get(f"/api/v1/agents/{catalog.writer.pk}").json()
    assert (agent["work_status"], agent["current_task"]) == ("busy", str(task.pk))


def test_cancel_ends_a_task_and_its_run_and_is_refused_once_ended(team, dev, catalog):
    task = create(dev, team, agent=str(catalog.writer.pk))
    dev.post(f"{TASKS}/{task.pk}/start")

    assert dev.post(f"{TASKS}/{task.pk}/cancel").json()["status"] == "cancelled"
    assert dev.post(f"{TASKS}/{task.pk}/cancel").status_code == 200  # twice is harmless
    assert Run.objects.get().status == RunStatus.CANCELLING
    assert Agent.objects.get(pk=catalog.writer.pk).work_status == "idle"
    Task.objects.filter(pk=task.pk).update(status=TaskStatus.REVIEW)
    assert dev.post(f"{TASKS}/{task.pk}/cancel").status_code == 409


def test_a_task_of_no_repository_runs_its_agent_and_is_done(team, dev, catalog, engine):
    task = create(dev, team, agent=str(catalog.writer.pk), description="Briefly")
    dev.post(f"{TASKS}/{task.pk}/start")
    task.refresh_from_db()
    assert task.status == TaskStatus.DONE
    assert task.runs.get().outputs == {"task": {"answer": "echo: Fix it\n\nBriefly"}}
    assert Sandbox.objects.get(task=task).status == SandboxStatus.DESTROYED


# ------------------------------------------------------------------------------
# Lists and filters
# ------------------------------------------------------------------------------
def test_the_list_filters_by_status_priority_and_agent(team, dev, catalog):
    writer = create(dev, team, agent=str(catalog.writer.pk), priority="high")
    helper = create(dev, team, agent=str(catalog.helper.pk), priority="low")
    Task.objects.filter(pk=helper.pk).update(status=TaskStatus.DONE)
    viewer = team.client(Role.VIEWER)
    assert ids(viewer.get(TASKS, {"status": "done"})) == [str(helper.pk)]
    assert ids(viewer.get(TASKS, {"priority": "high"})) == [str(writer.pk)]
    assert ids(viewer.get(TASKS, {"agent": str(catalog.helper.pk)})) == [str(helper.pk)]
    assert ids(team.client("outsider").get(TASKS)) == []


def test_listing_tasks_takes_a_fixed_number_of_queries(team, dev, catalog):
    create(dev, team, agent=str(catalog.writer.pk))
    with CaptureQueriesContext(connection) as few:
        dev.get(TASKS)
    for _ in range(6):
        create(dev, team, agent=str(catalog.helper.pk))
    with CaptureQueriesContext(connection) as many:
        assert len(ids(dev.get(TASKS))) == 7
    assert len(many) == len(few)


# ------------------------------------------------------------------------------
# Sandboxes and git operations
# ------------------------------------------------------------------------------
def test_destroying_a_sandbox_removes_it_and_keeps_the_record(team, dev, catalog, settings, tmp_path):
    settings.SPARKOPS_SANDBOX_ROOT = str(tmp_path)
    sandbox = services.sandbox_create(project=team.project, agent=catalog.writer)
    assert (tmp_path / str(sandbox.pk)).is_dir()

    assert dev.delete(f"{SANDBOXES}/{sandbox.pk}").status_code == 204

    body = team.client(Role.VIEWER).get(f"{SANDBOXES}/{sandbox.pk}").json()
    assert body["status"] == "destroyed"
    assert body["seconds_alive"] is not None
    assert not (tmp_path / str(sandbox.pk)).exists()
    assert team.client("outsider").get(f"{SANDBOXES}/{sandbox.pk}").status_code == 404
    assert ids(team.client(Role.VIEWER).get(SANDBOXES, {"status": "destroyed"})) == [str(sandbox.pk)]


def test_git_operations_are_listed_per_task_and_sandbox(team, dev, catalog):
    task = create(dev, team, agent=str(catalog.writer.pk))
    sandbox = Sandbox.objects.create(project=team.project, task=task, provider="local")
    GitOperation.objects.create(sandbox=sandbox, task=task, kind="clone", status="succeeded")
    for url in (f"{TASKS}/{task.pk}/git-operations", f"{SANDBOXES}/{sandbox.pk}/git-operations"):
        rows = team.client(Role.VIEWER).get(url).json()
        assert [(r["kind"], r["status"]) for r in rows] == [("clone", "succeeded")]


# ------------------------------------------------------------------------------
# POST /agents/{id}/start-task
# ------------------------------------------------------------------------------
def test_start_task_creates_a_started_task_and_still_takes_a_numeric_priority(team, dev, catalog):
    response = dev.post(f"/api/v1/agents/{catalog.writer.pk}/start-task", {"title": "Write", "priority": 5})
    assert response.status_code == 201, response.json()
    task = Task.objects.get()
    assert (task.status, task.priority, task.agent, task.title) == ("in_progress", "high", catalog.writer, "Write")
    run = task.runs.get()
    assert (run.task_agent, run.title, run.priority, run.inputs) == (
        catalog.writer,
        "Write",
        10,
        {"task": str(task.pk)},
    )


def test_start_task_replays_a_repeated_idempotency_key(team, dev, catalog):
    url = f"/api/v1/agents/{catalog.writer.pk}/start-task"
    first = dev.post(url, {"title": "Write"}, HTTP_IDEMPOTENCY_KEY="k")
    again = dev.post(url, {"title": "Write"}, HTTP_IDEMPOTENCY_KEY="k")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert dev.post(url, {"title": "Other"}, HTTP_IDEMPOTENCY_KEY="k").status_code == 422
    assert (Task.objects.count(), Run.objects.count()) == (1, 1)


def test_a_refused_start_task_leaves_no_task(team, dev, catalog):
    Agent.objects.filter(pk=catalog.writer.pk).update(status="disabled")
    response = dev.post(f"/api/v1/agents/{catalog.writer.pk}/start-task", {"title": "Write"})
    assert response.status_code == 400
    assert response.json()["errors"] == {"agent": ["The agent is disabled."]}
    assert not Task.objects.exists()
