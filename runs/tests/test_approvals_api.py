"""GET /api/v1/approvals: the steps waiting for a decision across the caller's projects."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.tests.factories import ApiKeyFactory
from projects.tests.factories import MembershipFactory
from runs.choices import RunStatus, StepStatus
from runs.models import Run, RunStep
from sparkops.testing import client_for

from .factories import approval_step, make_catalog, make_workflow, start

URL = "/api/v1/approvals"
pytestmark = pytest.mark.django_db


def parked(project, role: str = "admin", slug: str = "gated") -> Run:
    run = start(make_workflow(project, approval_step("gate", role=role), slug=slug))
    RunStep.objects.filter(run=run, key="gate").update(status=StepStatus.WAITING_APPROVAL)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.WAITING_APPROVAL)
    return run


@pytest.fixture
def gated(team):
    make_catalog(team.project)
    return parked(team.project)


def test_it_lists_waiting_steps_with_whether_the_caller_may_decide(team, gated):
    start(make_workflow(team.project, slug="plain"))  # nothing waits in it

    developer = team.client("developer").get(URL).json()["results"]
    admin = team.client("admin").get(URL).json()["results"]

    assert [(row["run"], row["step"], row["role"], row["can_decide"]) for row in developer] == [
        (str(gated.pk), "gate", "admin", False)
    ]
    assert admin[0]["can_decide"] is True
    assert admin[0]["approve_url"] == f"/api/v1/runs/{gated.pk}/steps/gate/approve"
    assert admin[0]["run_label"] == str(Run.objects.get(pk=gated.pk))


def test_an_outsider_sees_nothing_and_another_project_is_404(team, gated):
    assert team.client("outsider").get(URL).json()["results"] == []
    assert team.client("outsider").get(URL, {"project": str(team.project.pk)}).status_code == 404


def test_it_filters_by_project_workflow_and_run(team, gated):
    make_catalog(team.other_project)
    MembershipFactory(user=team.members["owner"], project=team.other_project, role="owner")
    elsewhere = parked(team.other_project, slug="gated2")
    client = team.client("owner")

    assert len(client.get(URL).json()["results"]) == 2
    only = client.get(URL, {"project": str(team.other_project.pk)}).json()["results"]
    assert [row["run"] for row in only] == [str(elsewhere.pk)]
    by_workflow = client.get(URL, {"workflow": str(gated.workflow_id)}).json()["results"]
    assert [row["run"] for row in by_workflow] == [str(gated.pk)]
    assert [row["run"] for row in client.get(URL, {"run": str(elsewhere.pk)}).json()["results"]] == [str(elsewhere.pk)]


def test_a_decided_step_leaves_the_inbox(team, gated):
    client = team.client("admin")
    assert client.post(f"/api/v1/runs/{gated.pk}/steps/gate/approve", {}, format="json").status_code == 200

    assert client.get(URL).json()["results"] == []


def test_an_api_key_sees_its_project_with_its_role(team, gated):
    key = ApiKeyFactory(project=team.project, created_by=team.members["owner"], role="developer")

    rows = client_for(api_key=key.raw).get(URL).json()["results"]

    assert [row["can_decide"] for row in rows] == [False]  # a developer key, an admin gate


def test_the_inbox_costs_the_same_queries_however_many_steps_wait(team, gated):
    client = team.client("owner")
    with CaptureQueriesContext(connection) as one:
        client.get(URL)
    for n in range(5):
        parked(team.project, slug=f"more{n}")
    with CaptureQueriesContext(connection) as six:
        rows = client.get(URL).json()["results"]

    assert len(rows) == 6
    assert len(six) == len(one)
