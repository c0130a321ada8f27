"""/api/v1/runs, /workflows/{id}/run, /agents/{id}/start-task and /tasks: the role matrix and
isolation between projects for every endpoint, the database state each write leaves, cursor
pagination, filters and bounded query counts.

The plain ``db`` fixture keeps the engine still (nothing enqueued on commit), so each test sets
up the state it needs; ``eager`` runs the immediate dispatches (cancel) in the test's thread."""

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from projects.tests.factories import MembershipFactory
from runs.choices import EventType, RunStatus, StepStatus, Trigger
from runs.models import Approval, Run, RunStep
from schedules.freeze import project_freeze
from sparkops.roles import Role
from sparkops.testing import ROLES
from workflows import services as workflow_services
from workflows.models import Workflow

from .factories import agent_step, approval_step, bare_run, make_catalog, make_workflow, start, statuses, step_of

RUNS = "/api/v1/runs"
TASKS = "/api/v1/tasks"
WHO = [*ROLES, "outsider"]
ERROR_KEYS = {"status", "code", "message", "errors"}


def expected(who: str, ok: int, needed: str = Role.DEVELOPER) -> int:
    if who == "outsider":
        return 404
    return ok if Role.at_least(who, needed) else 403


def assert_error(response, status: int) -> dict:
    body = response.json()
    assert response.status_code == status, body
    assert set(body) == ERROR_KEYS
    return body


def run_url(run, suffix: str = "") -> str:
    return f"{RUNS}/{getattr(run, 'pk', run)}{suffix}"


def ids(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return [row["id"] for row in response.json()["results"]]


@pytest.fixture
def eager():
    """Tasks enqueued right away (not on commit) run in the test's thread."""
    from sparkops.celery import app

    app.conf.task_always_eager = app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager = app.conf.task_eager_propagates = False


@pytest.fixture
def catalog(team):
    make_catalog(team.other_project)
    return make_catalog(team.project)


@pytest.fixture
def workflow(catalog) -> Workflow:
    return make_workflow(catalog.project)


@pytest.fixture
def run(workflow) -> Run:
    return start(workflow)


@pytest.fixture
def other_run(catalog, team) -> Run:
    return start(make_workflow(team.other_project))


@pytest.fixture
def failed(workflow) -> Run:
    return bare_run(workflow, status=RunStatus.FAILED)


@pytest.fixture
def parked(catalog) -> Run:
    """Parked at a gate only admins may open."""
    run = start(make_workflow(catalog.project, approval_step("gate", role=Role.ADMIN), slug="gated"))
    RunStep.objects.filter(run=run, key="gate").update(status=StepStatus.WAITING_APPROVAL)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.WAITING_APPROVAL)
    return run


def status_of(run: Run) -> str:
    return Run.objects.values_list("status", flat=True).get(pk=run.pk)


# ------------------------------------------------------------------------------
# Authentication, for every endpoint
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "{runs}"),
        ("post", "{runs}"),
        ("get", "{run}"),
        ("get", "{run}/steps"),
        ("get", "{run}/events"),
        ("post", "{run}/cancel"),
        ("patch", "{run}/cancel"),
        ("post", "{run}/retry"),
        ("post", "{run}/steps/a/approve"),
        ("post", "{run}/steps/a/reject"),
        ("post", "/api/v1/workflows/{workflow}/run"),
        ("post", "/api/v1/agents/{agent}/start-task"),
        ("get", "{tasks}"),
    ],
)
def test_every_endpoint_needs_authentication(api_client, catalog, run, method, path):
    url = path.format(runs=RUNS, tasks=TASKS, run=run_url(run), workflow=run.workflow_id, agent=catalog.writer.pk)
    response = getattr(api_client, method)(url, {"workflow": str(run.workflow_id), "title": "x"})
    assert assert_error(response, 401)["code"] == "not_authenticated"
    assert Run.objects.count() == 1
    assert status_of(run) == RunStatus.QUEUED


# ------------------------------------------------------------------------------
# List
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("who", WHO)
def test_the_list_shows_only_runs_of_the_callers_projects(team, run, other_run, who):
    response = team.client(who).get(RUNS)
    assert ids(response) == [str(other_run.pk if who == "outsider" else run.pk)]
    if who != "outsider":
        row = response.json()["results"][0]
        assert (row["status"], row["version"], row["workflow"], row["project"]) == (
            "queued",
            1,
            str(run.workflow_id),
            str(team.project.pk),
        )


@pytest.mark.parametrize("value", ["team", "unknown", "not-a-uuid"])
def test_listing_a_project_the_caller_is_not_in_is_404(team, run, value):
    project = {"team": str(team.project.pk), "unknown": str(uuid.uuid4()), "not-a-uuid": "x"}[value]
    assert_error(team.client("outsider").get(RUNS, {"project": project}), 404)


def test_the_list_filters_by_project(team, run, other_run):
    MembershipFactory(project=team.other_project, user=team.members[Role.DEVELOPER], role=Role.VIEWER)
    client = team.client(Role.DEVELOPER)
    assert set(ids(client.get(RUNS))) == {str(run.pk), str(other_run.pk)}
    assert ids(client.get(RUNS, {"project": str(team.other_project.pk)})) == [str(other_run.pk)]


def test_the_list_is_cursor_paginated_newest_first_without_a_count(team, workflow):
    made = [start(workflow) for _ in range(5)]
    client = team.client(Role.VIEWER)

    page = client.get(RUNS, {"page_size": 2}).json()
    assert "count" not in page
    assert len(page["results"]) == 2
    assert page["previous"] is None
    seen = [row["id"] for row in page["results"]]
    while page["next"]:
        page = client.get(page["next"]).json()
        seen += [row["id"] for row in page["results"]]

    assert seen == [str(r.pk) for r in sorted(made, key=lambda r: (r.queued_at, r.pk.hex), reverse=True)]


def list_queries(client) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(RUNS)
    return len(queries), len(ids(response))


def test_listing_takes_a_fixed_number_of_queries(team, workflow, catalog, django_assert_max_num_queries):
    client = team.client(Role.VIEWER)
    start(workflow)
    few, count = list_queries(client)
    assert count == 1
    for _ in range(8):
        run = start(workflow, user=team.members[Role.OWNER], task_agent=catalog.writer)
        Run.objects.filter(pk=run.pk).update(parent=run)

    with django_assert_max_num_queries(3):
        many, count = list_queries(client)

    assert count == 9
    assert many == few


# ------------------------------------------------------------------------------
# Filters
# ------------------------------------------------------------------------------
def test_the_status_filter_takes_several_values(team, workflow):
    made = {status: bare_run(workflow, status=status) for status in ("queued", "failed", "cancelled", "succeeded")}
    response = team.client(Role.VIEWER).get(RUNS, {"status": ["failed", "cancelled"]})
    assert set(ids(response)) == {str(made["failed"].pk), str(made["cancelled"].pk)}


def test_the_trigger_filter(team, workflow, run):
    retried = bare_run(workflow, trigger=Trigger.RETRY)
    assert ids(team.client(Role.VIEWER).get(RUNS, {"trigger": "retry"})) == [str(retried.pk)]
    assert ids(team.client(Role.VIEWER).get(RUNS, {"trigger": "api"})) == [str(run.pk)]


def test_the_workflow_filter(team, catalog, run):
    other = start(make_workflow(catalog.project, slug="other"))
    response = team.client(Role.VIEWER).get(RUNS, {"workflow": str(other.workflow_id)})
    assert ids(response) == [str(other.pk)]


def test_the_queued_after_and_before_filters(team, workflow):
    now = timezone.now()
    old, new = bare_run(workflow), bare_run(workflow)
    Run.objects.filter(pk=old.pk).update(queued_at=now - timedelta(days=2))
    client = team.client(Role.VIEWER)
    cut = (now - timedelta(days=1)).isoformat()

    assert ids(client.get(RUNS, {"queued_after": cut})) == [str(new.pk)]
    assert ids(client.get(RUNS, {"queued_before": cut})) == [str(old.pk)]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("queued_before", "0521-11-25T22:53:04.56-16:33"),  # no time zone is 16 hours off UTC
        ("queued_after", "0001-01-01T00:00:00+05:00"),  # before year 1 once in UTC
        ("queued_before", "9999-12-31T23:00:00-05:00"),  # after year 9999 once in UTC
    ],
)
def test_a_date_time_no_clock_can_show_is_a_field_error(team, workflow, name, value):
    response = team.client(Role.VIEWER).get(RUNS, {name: value})

    assert response.status_code == 400, response.content
    assert list(response.json()["errors"]) == [name]


def test_an_invalid_filter_value_is_400(team, run):
    assert_error(team.client(Role.VIEWER).get(RUNS, {"status": "nope"}), 400)


# ------------------------------------------------------------------------------
# Start: POST /runs
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("who", ROLES)
def test_starting_a_run_needs_the_developer_role(team, workflow, who):
    body = {"workflow": str(workflow.pk), "inputs": {"name": "Ada"}, "title": "T", "priority": 2}
    response = team.client(who).post(RUNS, body)

    assert response.status_code == expected(who, 201), response.json()
    if response.status_code != 201:
        assert not Run.objects.exists()
        return
    run = Run.objects.get()
    assert response.json()["id"] == str(run.pk)
    assert [s["key"] for s in response.json()["steps"]] == ["a", "b"]
    assert (run.status, run.trigger, run.created_by, run.inputs, run.title, run.priority) == (
        RunStatus.QUEUED,
        Trigger.API,
        team.members[who],
        {"name": "Ada"},
        "T",
        2,
    )


def test_an_outsider_cannot_start_a_run_of_another_projects_workflow(team, workflow):
    response = team.client("outsider").post(RUNS, {"workflow": str(workflow.pk), "inputs": {"name": "Ada"}})
    assert "workflow" in assert_error(response, 400)["errors"]
    response = team.client("outsider").post(RUNS, {"workflow_version": workflow.versions.get().pk})
    assert "workflow_version" in assert_error(response, 400)["errors"]
    assert not Run.objects.exists()


def test_a_run_can_pin_a_workflow_version(team, workflow):
    version = workflow.versions.get()
    response = team.client(Role.DEVELOPER).post(RUNS, {"workflow_version": version.pk, "inputs": {"name": "A"}})
    assert response.status_code == 201
    assert Run.objects.get().workflow_version == version


def test_a_version_of_another_workflow_is_400(team, workflow, catalog):
    other = make_workflow(catalog.project, slug="other")
    body = {"workflow": str(workflow.pk), "workflow_version": other.versions.get().pk, "inputs": {"name": "A"}}
    response = team.client(Role.DEVELOPER).post(RUNS, body)
    assert "version" in assert_error(response, 400)["errors"]
    assert not Run.objects.exists()


def test_starting_needs_a_workflow_or_a_version(team, workflow):
    assert "workflow" in assert_error(team.client(Role.DEVELOPER).post(RUNS, {}), 400)["errors"]


def test_inputs_that_do_not_match_the_schema_are_400_and_write_nothing(team, workflow):
    response = team.client(Role.DEVELOPER).post(RUNS, {"workflow": str(workflow.pk), "inputs": {"name": 1}})
    assert assert_error(response, 400)["errors"]["inputs"] == ["name: 1 is not of type 'string'"]
    assert not Run.objects.exists()
    assert not RunStep.objects.exists()


def test_an_unpublished_workflow_is_400(team, catalog):
    draft = make_workflow(catalog.project, slug="draft", publish=False)
    response = team.client(Role.DEVELOPER).post(RUNS, {"workflow": str(draft.pk), "inputs": {"name": "A"}})
    assert "version" in assert_error(response, 400)["errors"]
    assert not Run.objects.exists()


def test_a_repeated_idempotency_key_returns_the_same_run(team, workflow):
    client = team.client(Role.DEVELOPER)
    body = {"workflow": str(workflow.pk), "inputs": {"name": "Ada"}}

    first = client.post(RUNS, body, HTTP_IDEMPOTENCY_KEY="abc")
    second = client.post(RUNS, body, HTTP_IDEMPOTENCY_KEY="abc")

    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert Run.objects.get().idempotency_key == "abc"


def test_a_reused_idempotency_key_with_a_different_body_is_422(team, workflow, catalog):
    client = team.client(Role.DEVELOPER)
    first = client.post(RUNS, {"workflow": str(workflow.pk), "inputs": {"name": "Ada"}}, HTTP_IDEMPOTENCY_KEY="abc")
    other = make_workflow(catalog.project, slug="other")

    changed_inputs = client.post(
        RUNS, {"workflow": str(workflow.pk), "inputs": {"name": "Bob"}}, HTTP_IDEMPOTENCY_KEY="abc"
    )
    changed_workflow = client.post(
        RUNS, {"workflow": str(other.pk), "inputs": {"name": "Ada"}}, HTTP_IDEMPOTENCY_KEY="abc"
    )

    for response in (changed_inputs, changed_workflow):
        body = assert_error(response, 422)
        assert body["code"] == "idempotency_key_reused"
        assert "different request" in body["errors"]["idempotency_key"][0]
        assert first.json()["id"] in body["message"]
    assert Run.objects.count() == 1


def test_a_repeated_idempotency_key_on_the_workflow_shortcut_and_start_task(team, workflow, catalog):
    client = team.client(Role.DEVELOPER)
    url = f"/api/v1/workflows/{workflow.pk}/run"
    first = client.post(url, {"inputs": {"name": "Ada"}}, HTTP_IDEMPOTENCY_KEY="wf")
    again = client.post(url, {"inputs": {"name": "Ada"}}, HTTP_IDEMPOTENCY_KEY="wf")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert client.post(url, {"inputs": {"name": "Bob"}}, HTTP_IDEMPOTENCY_KEY="wf").status_code == 422

    task_url = f"/api/v1/agents/{catalog.writer.pk}/start-task"
    task = client.post(task_url, {"title": "Write"}, HTTP_IDEMPOTENCY_KEY="task")
    task_again = client.post(task_url, {"title": "Write"}, HTTP_IDEMPOTENCY_KEY="task")
    assert (task.status_code, task_again.status_code) == (201, 200)
    assert task.json()["id"] == task_again.json()["id"]
    assert client.post(task_url, {"title": "Other"}, HTTP_IDEMPOTENCY_KEY="task").status_code == 422
    assert Run.objects.count() == 2


def three_steps(catalog) -> Workflow:
    steps = (agent_step("a"), agent_step("b", depends_on=["a"]), agent_step("c", depends_on=["b"]))
    return make_workflow(catalog.project, *steps, slug="three")


def test_starting_a_run_takes_a_fixed_number_of_queries_and_answers_as_a_read_would(team, catalog):
    """The caller, their memberships, and the workflow with its project and the id of its newest
    published version (the version itself comes from the process's cache); then, in one
    transaction, the run policies, the run (born with its event numbers), its steps (the first one
    queued: no concurrency limit applies), and the events (the live stream's NOTIFY is a trigger's,
    not a statement). The answer's steps are the ones written, not read back, and are what
    GET /runs/{id} returns."""
    workflow = three_steps(catalog)
    client = team.client(Role.DEVELOPER)
    body = {"workflow": str(workflow.pk), "inputs": {"name": "Ada"}}
    client.post(RUNS, body)  # the published version is read once per process

    with CaptureQueriesContext(connection) as queries:
        response = client.post(RUNS, body)

    assert response.status_code == 201, response.json()
    statements = [query["sql"] for query in queries.captured_queries if "SAVEPOINT" not in query["sql"]]
    assert len(statements) == 7, statements
    created = response.json()
    assert [step["key"] for step in created["steps"]] == ["a", "b", "c"]
    assert created == client.get(run_url(created["id"])).json()
    run = Run.objects.get(pk=created["id"])
    assert [(event.sequence, event.type) for event in run.events.all()] == [
        (1, EventType.RUN_QUEUED),
        (2, EventType.STEP_QUEUED),
    ]
    assert run.event_seq == 2
    assert [step["status"] for step in created["steps"]] == ["queued", "pending", "pending"]


def test_a_newly_published_version_is_pinned_by_the_next_run(team, catalog):
    """Which version is newest is read with the workflow on every start; only the version's
    content is cached, and a published version never changes."""
    workflow = three_steps(catalog)
    client = team.client(Role.DEVELOPER)
    body = {"workflow": str(workflow.pk), "inputs": {"name": "Ada"}}
    assert client.post(RUNS, body).json()["version"] == 1

    workflow_services.workflow_update(workflow=workflow, user=None, definition={"steps": [agent_step("only")]})
    assert client.post(RUNS, body).json()["version"] == 1  # version 2 is a draft
    workflow_services.version_publish(version=workflow.versions.get(number=2))
    second = client.post(RUNS, body).json()

    assert second["version"] == 2
    assert [step["key"] for step in second["steps"]] == ["only"]


def test_a_frozen_project_refuses_new_runs_and_a_dry_run_in_an_archived_one_is_409(team, catalog):
    workflow = three_steps(catalog)
    client = team.client(Role.DEVELOPER)
    body = {"workflow": str(workflow.pk), "inputs": {"name": "Ada"}}
    project_freeze(project=catalog.project, reason="incident")
    frozen = client.post(RUNS, body)
    assert frozen.status_code == 409
    assert (frozen.json()["code"], frozen.json()["frozen_reason"]) == ("project_frozen", "incident")

    catalog.project.archived = True
    catalog.project.save(update_fields=["archived"])
    assert assert_error(client.post(RUNS, body), 409)["code"] == "project_archived"
    assert assert_error(client.post(RUNS, {**body, "dry_run": True}), 409)["code"] == "project_archived"
    assert not Run.objects.exists()


# ------------------------------------------------------------------------------
# Read one run, its steps and its events
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("who", WHO)
def test_reading_a_run_needs_membership(team, run, who):
    response = team.client(who).get(run_url(run))
    assert response.status_code == expected(who, 200, Role.VIEWER)
    if response.status_code == 200:
        body = response.json()
        assert body["id"] == str(run.pk)
        assert [s["key"] for s in body["steps"]] == ["a", "b"]


@pytest.mark.parametrize("who", WHO)
def test_reading_the_steps_needs_membership(team, run, who):
    response = team.client(who).get(run_url(run, "/steps"))
    assert response.status_code == expected(who, 200, Role.VIEWER)
    if response.status_code == 200:
        assert [(s["key"], s["status"], s["agent"]) for s in response.json()] == [
            ("a", "queued", None),
            ("b", "pending", None),
        ]


@pytest.mark.parametrize("who", WHO)
def test_reading_the_events_needs_membership(team, run, who):
    response = team.client(who).get(run_url(run, "/events"))
    assert response.status_code == expected(who, 200, Role.VIEWER)
    if response.status_code == 200:
        assert [(e["sequence"], e["type"]) for e in response.json()] == [
            (1, EventType.RUN_QUEUED),
            (2, EventType.STEP_QUEUED),
        ]


def test_events_after_a_sequence_are_only_the_later_ones(team, parked):
    client = team.client(Role.ADMIN)
    client.post(run_url(parked, "/steps/gate/approve"))
    every = client.get(run_url(parked, "/events")).json()
    assert [e["sequence"] for e in every] == [1, 2, 3]  # run.queued, step.queued, step.approved

    later = client.get(run_url(parked, "/events"), {"after": 2}).json()

    assert [(e["sequence"], e["type"], e["step"]) for e in later] == [(3, EventType.STEP_APPROVED, "gate")]
    assert client.get(run_url(parked, "/events"), {"after": 3}).json() == []
    assert "after" in assert_error(client.get(run_url(parked, "/events"), {"after": "x"}), 400)["errors"]


def test_an_unknown_run_is_404(team):
    assert_error(team.client(Role.OWNER).get(run_url(uuid.uuid4())), 404)


# ------------------------------------------------------------------------------
# Cancel
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["post", "patch"])
@pytest.mark.parametrize("who", WHO)
def test_cancelling_needs_the_developer_role(eager, team, run, who, method):
    response = getattr(team.client(who), method)(run_url(run, "/cancel"))

    assert response.status_code == expected(who, 200), response.json()
    if response.status_code == 200:
        assert status_of(run) == RunStatus.CANCELLED
        assert set(statuses(run).values()) == {StepStatus.CANCELLED}
    else:
        assert status_of(run) == RunStatus.QUEUED


def test_cancelling_twice_is_harmless(eager, team, run):
    client = team.client(Role.DEVELOPER)
    assert client.post(run_url(run, "/cancel")).status_code == 200
    response = client.post(run_url(run, "/cancel"))
    assert response.status_code == 200
    assert response.json()["status"] == RunStatus.CANCELLED


@pytest.mark.parametrize("status", [RunStatus.SUCCEEDED, RunStatus.FAILED])
def test_cancelling_a_finished_run_is_409(team, workflow, status):
    run = bare_run(workflow, status=status)
    assert assert_error(team.client(Role.DEVELOPER).post(run_url(run, "/cancel")), 409)["code"] == "conflict"
    assert status_of(run) == status


# ------------------------------------------------------------------------------
# Retry
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("who", WHO)
def test_retrying_needs_the_developer_role(team, failed, who):
    response = team.client(who).post(run_url(failed, "/retry"))

    assert response.status_code == expected(who, 201), response.json()
    if response.status_code == 201:
        retry = Run.objects.get(parent=failed)
        assert response.json()["id"] == str(retry.pk)
        assert (retry.trigger, retry.status, retry.created_by) == (Trigger.RETRY, RunStatus.QUEUED, team.members[who])
    else:
        assert Run.objects.count() == 1


def test_retrying_with_new_inputs(team, failed):
    response = team.client(Role.DEVELOPER).post(run_url(failed, "/retry"), {"inputs": {"name": "Bob"}})
    assert response.status_code == 201
    assert Run.objects.get(parent=failed).inputs == {"name": "Bob"}


def test_a_repeated_idempotency_key_on_retry_returns_the_first_retry(team, failed):
    client = team.client(Role.DEVELOPER)
    first = client.post(run_url(failed, "/retry"), {"inputs": {"name": "Bob"}}, HTTP_IDEMPOTENCY_KEY="r-1")
    again = client.post(run_url(failed, "/retry"), {"inputs": {"name": "Bob"}}, HTTP_IDEMPOTENCY_KEY="r-1")
    reused = client.post(run_url(failed, "/retry"), {"inputs": {"name": "Cy"}}, HTTP_IDEMPOTENCY_KEY="r-1")

    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert assert_error(reused, 422)["code"] == "idempotency_key_reused"
    assert Run.objects.filter(parent=failed).count() == 1


def test_retrying_with_inputs_that_do_not_match_the_schema_is_400(team, failed):
    response = team.client(Role.DEVELOPER).post(run_url(failed, "/retry"), {"inputs": {"name": 5}})
    assert "inputs" in assert_error(response, 400)["errors"]
    assert Run.objects.count() == 1


@pytest.mark.parametrize("status", [RunStatus.SUCCEEDED, RunStatus.RUNNING, RunStatus.QUEUED])
def test_retrying_a_run_that_did_not_fail_is_409(team, workflow, status):
    run = bare_run(workflow, status=status)
    assert_error(team.client(Role.DEVELOPER).post(run_url(run, "/retry")), 409)
    assert Run.objects.count() == 1


# ------------------------------------------------------------------------------
# Approve and reject
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("verb", ["approve", "reject"])
@pytest.mark.parametrize("who", WHO)
def test_deciding_needs_the_role_the_step_names(team, parked, who, verb):
    response = team.client(who).post(run_url(parked, f"/steps/gate/{verb}"), {"comment": "c"})

    assert response.status_code == expected(who, 200, Role.ADMIN), response.json()
    gate = step_of(parked, "gate")
    if response.status_code == 200:
        assert gate.status == (StepStatus.SUCCEEDED if verb == "approve" else StepStatus.FAILED)
        assert response.json()["status"] == gate.status
        approval = Approval.objects.get(step=gate)
        assert (approval.decided_by, approval.comment) == (team.members[who], "c")
    else:
        assert gate.status == StepStatus.WAITING_APPROVAL
        assert not Approval.objects.exists()


def test_a_step_may_name_the_developer_role_that_can_decide_it(team, catalog):
    # The lowest a gate may name: viewers only read (workflows.kinds.approval.APPROVER_ROLES).
    step_role = Role.DEVELOPER
    run = start(make_workflow(catalog.project, approval_step("gate", role=step_role), slug="low"))
    RunStep.objects.filter(run=run, key="gate").update(status=StepStatus.WAITING_APPROVAL)

    response = team.client(step_role).post(run_url(run, "/steps/gate/approve"))

    assert response.status_code == 200, response.json()
    assert step_of(run, "gate").status == StepStatus.SUCCEEDED
    assert Approval.objects.get().decided_by == team.members[step_role]


def test_deciding_twice_is_409(team, parked):
    client = team.client(Role.OWNER)
    assert client.post(run_url(parked, "/steps/gate/approve")).status_code == 200
    assert_error(client.post(run_url(parked, "/steps/gate/reject")), 409)
    assert step_of(parked, "gate").status == StepStatus.SUCCEEDED
    assert Approval.objects.count() == 1


def test_deciding_a_step_that_is_not_waiting_is_409(team, run):
    assert_error(team.client(Role.OWNER).post(run_url(run, "/steps/a/approve")), 409)


def test_deciding_an_unknown_step_is_400(team, parked):
    assert "key" in assert_error(team.client(Role.OWNER).post(run_url(parked, "/steps/nope/approve")), 400)["errors"]


# ------------------------------------------------------------------------------
# POST /workflows/{id}/run
# ------------------------------------------------------------------------------
def workflow_run_url(workflow) -> str:
    return f"/api/v1/workflows/{workflow.pk}/run"


@pytest.mark.parametrize("who", WHO)
def test_running_a_workflow_needs_the_developer_role(team, workflow, who):
    response = team.client(who).post(workflow_run_url(workflow), {"inputs": {"name": "Ada"}, "title": "Now"})

    assert response.status_code == expected(who, 201), response.json()
    if response.status_code == 201:
        run = Run.objects.get()
        assert (run.workflow, run.title, run.created_by, run.workflow_version.number) == (
            workflow,
            "Now",
            team.members[who],
            1,
        )
    else:
        assert not Run.objects.exists()


def test_running_a_given_workflow_version(team, workflow):
    workflow_services.workflow_update(workflow=workflow, user=None, definition={"steps": [agent_step("only")]})
    workflow_services.version_publish(version=workflow.versions.get(number=2))
    client = team.client(Role.DEVELOPER)

    pinned = client.post(workflow_run_url(workflow), {"inputs": {"name": "A"}, "version": 1})
    latest = client.post(workflow_run_url(workflow), {"inputs": {"name": "A"}})

    assert (pinned.status_code, latest.status_code) == (201, 201)
    assert (pinned.json()["version"], latest.json()["version"]) == (1, 2)
    assert list(Run.objects.order_by("queued_at").values_list("workflow_version__number", flat=True)) == [1, 2]


def test_running_an_unknown_or_unpublished_version_is_400(team, workflow):
    workflow_services.workflow_update(workflow=workflow, user=None, definition={"steps": [agent_step("only")]})
    client = team.client(Role.DEVELOPER)
    for version in (2, 9):
        response = client.post(workflow_run_url(workflow), {"inputs": {"name": "A"}, "version": version})
        assert "version" in assert_error(response, 400)["errors"]
    assert not Run.objects.exists()


def test_running_an_inactive_workflow_is_400(team, workflow):
    Workflow.objects.filter(pk=workflow.pk).update(active=False)
    response = team.client(Role.DEVELOPER).post(workflow_run_url(workflow), {"inputs": {"name": "A"}})
    assert "workflow" in assert_error(response, 400)["errors"]


def test_running_a_workflow_is_idempotent_by_key(team, workflow):
    client = team.client(Role.DEVELOPER)
    first = client.post(workflow_run_url(workflow), {"inputs": {"name": "A"}}, HTTP_IDEMPOTENCY_KEY="k")
    second = client.post(workflow_run_url(workflow), {"inputs": {"name": "A"}}, HTTP_IDEMPOTENCY_KEY="k")
    assert (first.status_code, second.status_code) == (201, 200)
    assert Run.objects.count() == 1


def test_running_an_unknown_workflow_is_404(team):
    assert_error(team.client(Role.OWNER).post(f"/api/v1/workflows/{uuid.uuid4()}/run", {}), 404)


@pytest.mark.parametrize("path", ["/api/v1/workflows/{id}/run", "/api/v1/agents/{id}/start-task"])
def test_an_id_that_is_no_uuid_is_404_not_400(team, path):
    # The route accepts 36 hex digits and dashes; not every such string is a UUID.
    not_a_uuid = "E49bC5226d0ED10--E83052Bd19b36031F04"
    assert_error(team.client(Role.OWNER).post(path.format(id=not_a_uuid), {"title": "t"}), 404)
