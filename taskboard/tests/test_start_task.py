"""POST /agents/{id}/start-task keeps working, and the bugs of tasks found by a workflow slug are
gone: two agents with a long shared slug prefix each run as themselves, a person's workflow with
the old slug is left alone, and the workflow tasks run in never shows in /workflows."""

import pytest

from runs.choices import RunStatus
from runs.models import Run, RunStep
from runs.tests.factories import agent_step, echo_agent, make_catalog, make_workflow
from sparkops.roles import Role
from workflows.models import Workflow


@pytest.fixture
def catalog(team):
    return make_catalog(team.project)


def start_task(team, agent, title="Write", **body):
    response = team.client(Role.DEVELOPER).post(f"/api/v1/agents/{agent.pk}/start-task", {"title": title, **body})
    assert response.status_code == 201, response.json()
    return response.json()


def run_of(body: dict) -> Run:
    # The body is the task (with its runs); before tasks were records, it was the run itself.
    return Run.objects.get(pk=body["runs"][0] if "runs" in body else body["id"])


def test_agents_whose_long_slugs_share_a_prefix_each_run_as_themselves(team, engine, catalog):
    prefix = "a" * 60
    one = echo_agent(team.project, f"{prefix}-one")
    two = echo_agent(team.project, f"{prefix}-two")

    first, second = run_of(start_task(team, one)), run_of(start_task(team, two))

    assert RunStep.objects.get(run=first).input["agent"] == one.slug
    assert RunStep.objects.get(run=second).input["agent"] == two.slug
    assert (first.task_agent_id, second.task_agent_id) == (one.pk, two.pk)


def test_a_persons_workflow_with_the_old_task_slug_is_left_alone(team, engine, catalog):
    mine = make_workflow(team.project, agent_step("only", agent="helper"), slug="task-writer")

    run = run_of(start_task(team, catalog.writer))

    assert run.workflow_id != mine.pk
    assert mine.versions.count() == 1
    assert not Run.objects.filter(workflow=mine).exists()
    assert Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED


def test_the_workflow_tasks_run_in_never_shows_in_workflows_nor_can_be_edited(team, catalog):
    mine = make_workflow(team.project, slug="mine")
    run = run_of(start_task(team, catalog.writer))
    client = team.client(Role.OWNER)

    listed = client.get("/api/v1/workflows").json()["results"]

    assert [w["id"] for w in listed] == [str(mine.pk)]
    hidden = f"/api/v1/workflows/{run.workflow_id}"
    assert client.get(hidden).status_code == 404
    assert client.patch(hidden, {"description": "mine now"}, format="json").status_code == 404
    assert client.delete(hidden).status_code == 404
    assert client.post(f"{hidden}/run", {"inputs": {"task": "x"}}, format="json").status_code == 404
    assert Workflow.everything.get(pk=run.workflow_id).system


def test_a_person_may_create_a_workflow_with_the_system_workflows_slug(team, catalog):
    system = run_of(start_task(team, catalog.writer)).workflow
    body = {"project": str(team.project.pk), "name": "Mine", "slug": system.slug, "definition": {
        "steps": [agent_step("a", prompt="Hi")]}}  # fmt: skip
    response = team.client(Role.DEVELOPER).post("/api/v1/workflows", body, format="json")
    assert response.status_code == 201, response.json()
