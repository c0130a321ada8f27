"""End to end: real Celery worker processes, real Redis, real PostgreSQL, a real local
OpenAI-compatible server. Skipped unless DATABASE_URL and REDIS_URL are set (CI sets both)."""

import time

import pytest
from django.conf import settings

from agents import services as agent_services
from agents.models import Agent, ProviderCredential, Tool
from runs.choices import RUN_TERMINAL, EventType, RunStatus, StepStatus
from runs.engine import core
from runs.models import Run
from sparkops.celery import app as celery_app
from sparkops.testing import make_team
from workflows import services as workflow_services

from .e2e_support import FakeOpenAI, Worker

pytestmark = [
    pytest.mark.skipif(
        not (settings.DATABASE_URL.startswith("postgres") and settings.REDIS_URL),
        reason="end-to-end runs need PostgreSQL and Redis (set DATABASE_URL and REDIS_URL)",
    ),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture(scope="module")
def fake():
    server = FakeOpenAI()
    yield server
    server.stop()


@pytest.fixture
def worker(django_db_setup, tmp_path):
    celery_app.control.purge()  # messages other tests left for rows that no longer exist
    started = Worker(tmp_path / "worker.log").start()
    yield started
    started.stop()


@pytest.fixture
def catalog(fake):
    team = make_team()
    project = team.project
    calc = agent_services.tool_save(
        tool=Tool(project=project, slug="calc", name="Calculator", kind="builtin", config={"function": "arithmetic"})
    )
    credential = ProviderCredential(project=project, name="local", provider="openai", base_url=fake.base_url)
    agent_services.credential_save(credential=credential, secret="sk-local")
    smart = Agent(
        project=project, slug="smart", name="Smart", provider="openai", model="gpt-4o-mini", credential=credential
    )
    agent_services.agent_save(agent=smart, tool_list=[calc])
    agent_services.agent_save(agent=Agent(project=project, slug="echo", name="Echo", provider="echo", model="echo-1"))
    return team


def publish(team, slug: str, steps: list[dict], properties: dict | None = None):
    # Every input these runs read is given: required, so templates may read them bare.
    schema = {"type": "object", "properties": properties or {}, "required": sorted(properties or {})}
    return workflow_services.workflow_create(
        project=team.project,
        user=None,
        name=slug,
        slug=slug,
        definition={"steps": steps},
        input_schema=schema,
        publish=True,
    )


def wait_for(run_id, statuses, timeout: float = 30) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = Run.objects.get(pk=run_id)
        if run.status in statuses:
            return run
        time.sleep(0.1)
    steps = list(Run.objects.get(pk=run_id).steps.values_list("key", "status", "error"))
    raise AssertionError(f"run still {run.status}, wanted {statuses}: {steps}")


def start(team, workflow, inputs=None, who="developer") -> str:
    response = team.client(who).post(f"/api/v1/workflows/{workflow.pk}/run", {"inputs": inputs or {}}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def statuses(run: Run) -> dict[str, str]:
    return dict(run.steps.values_list("key", "status"))


def test_a_workflow_with_branches_a_tool_loop_a_condition_and_an_approval_completes(worker, fake, catalog):
    workflow = publish(
        catalog,
        "full",
        [
            {"key": "fetch", "kind": "agent", "agent": "smart", "prompt": "research {{ inputs.topic }} CALL=calc"},
            {
                "key": "left",
                "kind": "agent",
                "agent": "smart",
                "prompt": "left SLOW=0.8 {{ inputs.topic }}",
                "depends_on": ["fetch"],
            },
            {
                "key": "right",
                "kind": "agent",
                "agent": "smart",
                "prompt": "right SLOW=0.8 {{ inputs.topic }}",
                "depends_on": ["fetch"],
            },
            {
                "key": "check",
                "kind": "condition",
                "left": "{{ inputs.n }}",
                "op": ">",
                "right": "3",
                "then": ["gate"],
                "else": ["never"],
                "depends_on": ["left", "right"],
            },
            {"key": "gate", "kind": "approval", "role": "admin"},
            {"key": "never", "kind": "agent", "agent": "echo", "prompt": "never"},
            {
                "key": "final",
                "kind": "agent",
                "agent": "echo",
                "prompt": "final {{ steps.left.output }}",
                "depends_on": ["gate"],
            },
        ],
        {"topic": {"type": "string"}, "n": {"type": "integer"}},
    )
    run_id = start(catalog, workflow, {"topic": "solar", "n": 5})

    wait_for(run_id, {RunStatus.WAITING_APPROVAL})
    approved = catalog.client("admin").post(
        f"/api/v1/runs/{run_id}/steps/gate/approve", {"comment": "ok"}, format="json"
    )
    assert approved.status_code == 200, approved.json()
    run = wait_for(run_id, RUN_TERMINAL)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert statuses(run) == {
        "fetch": "succeeded",
        "left": "succeeded",
        "right": "succeeded",
        "check": "succeeded",
        "gate": "succeeded",
        "never": "skipped",
        "final": "succeeded",
    }
    steps = {step.key: step for step in run.steps.all()}
    # The two branches ran at the same time, on the worker's two processes.
    assert steps["left"].started_at < steps["right"].finished_at
    assert steps["right"].started_at < steps["left"].finished_at
    tool_calls = run.events.filter(type=EventType.TOOL_CALL).values_list("payload", flat=True)
    assert [(c["tool"], c["output"]) for c in tool_calls] == [("calc", 42)]
    assert fake.prompts["research solar CALL=calc"] == 2  # the question, then the answer with the tool result
    # Four completions from the fake server, 100 input tokens each; the run sums its steps.
    assert sum(steps[key].input_tokens for key in ("fetch", "left", "right")) == 400
    assert run.input_tokens == sum(step.input_tokens for step in steps.values())
    assert run.outputs["final"].startswith("echo: final answer to: left")


def test_a_transient_provider_failure_succeeds_on_retry(worker, fake, catalog):
    workflow = publish(
        catalog,
        "flaky",
        [
            {
                "key": "ask",
                "kind": "agent",
                "agent": "smart",
                "prompt": "FAIL_ONCE=flaky1 hello",
                "retry": {"attempts": 3, "backoff_seconds": 0},
            },
        ],
    )
    run = wait_for(start(catalog, workflow), RUN_TERMINAL)

    assert run.status == RunStatus.SUCCEEDED
    step = run.steps.get()
    assert step.attempt == 2
    assert run.events.filter(type=EventType.STEP_RETRYING).count() == 1


def test_cancelling_mid_run_stops_it_and_keeps_the_tokens_spent(worker, fake, catalog):
    workflow = publish(
        catalog,
        "slow",
        [
            {"key": "slow", "kind": "agent", "agent": "smart", "prompt": "SLOW=2 take your time"},
            {"key": "after", "kind": "agent", "agent": "echo", "prompt": "after", "depends_on": ["slow"]},
        ],
    )
    run_id = start(catalog, workflow)
    deadline = time.monotonic() + 20
    while Run.objects.get(pk=run_id).steps.get(key="slow").status != StepStatus.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.05)

    cancelled = catalog.client("developer").patch(f"/api/v1/runs/{run_id}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == RunStatus.CANCELLING
    run = wait_for(run_id, RUN_TERMINAL)

    assert run.status == RunStatus.CANCELLED
    assert statuses(run) == {"slow": "cancelled", "after": "cancelled"}
    assert run.input_tokens == 100  # the call that returned after the request still counts
    assert catalog.client("developer").post(f"/api/v1/runs/{run_id}/cancel").status_code == 200  # harmless twice


def test_retry_from_failure_reuses_the_outputs_of_succeeded_steps(worker, fake, catalog):
    workflow = publish(
        catalog,
        "mathy",
        [
            {"key": "intro", "kind": "agent", "agent": "smart", "prompt": "introduce {{ inputs.expr }} once"},
            {
                "key": "compute",
                "kind": "tool",
                "tool": "calc",
                "input": {"expression": "{{ inputs.expr }}"},
                "depends_on": ["intro"],
            },
        ],
        {"expr": {"type": "string"}},
    )
    failed = wait_for(start(catalog, workflow, {"expr": "1/0"}), RUN_TERMINAL)
    assert failed.status == RunStatus.FAILED
    assert failed.error["step"] == "compute"

    response = catalog.client("developer").post(f"/api/v1/runs/{failed.pk}/retry", {}, format="json")
    assert response.status_code == 201
    retry = wait_for(response.json()["id"], RUN_TERMINAL, timeout=30)

    # The failed step failed again on the same inputs; the succeeded one was reused, not re-run.
    assert retry.parent_id == failed.pk
    assert retry.steps.get(key="intro").reused_from_id == failed.steps.get(key="intro").pk
    assert not retry.events.filter(type=EventType.LLM_CALL).exists()
    assert fake.prompts["introduce 1/0 once"] == 1

    fixed = catalog.client("developer").post(
        f"/api/v1/runs/{failed.pk}/retry", {"inputs": {"expr": "2+2"}}, format="json"
    )
    run = wait_for(fixed.json()["id"], RUN_TERMINAL)
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs["compute"] == 4


def test_a_worker_killed_mid_step_loses_nothing_and_repeats_no_succeeded_step(worker, fake, catalog, tmp_path):
    workflow = publish(
        catalog,
        "sturdy",
        [
            {"key": "first", "kind": "agent", "agent": "smart", "prompt": "first of three"},
            {
                "key": "second",
                "kind": "agent",
                "agent": "smart",
                "prompt": "second SLOW=3 of three",
                "depends_on": ["first"],
                "timeout_seconds": 4,
            },
            {"key": "third", "kind": "agent", "agent": "smart", "prompt": "third of three", "depends_on": ["second"]},
        ],
    )
    run_id = start(catalog, workflow)
    deadline = time.monotonic() + 20
    while fake.prompts["second SLOW=3 of three"] == 0:  # the provider call of step two is in flight
        assert time.monotonic() < deadline
        time.sleep(0.02)

    worker.kill()
    replacement = Worker(tmp_path / "replacement.log").start()
    try:
        deadline = time.monotonic() + 60
        while Run.objects.get(pk=run_id).status not in RUN_TERMINAL:
            assert time.monotonic() < deadline, statuses(Run.objects.get(pk=run_id))
            core.reap()  # what the beat entry does every 30 s
            time.sleep(0.5)
    finally:
        replacement.stop()

    run = Run.objects.get(pk=run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert run.steps.get(key="second").attempt == 2
    # Steps that had succeeded were not executed again; the interrupted one ran once more.
    assert fake.prompts["first of three"] == 1
    assert fake.prompts["second SLOW=3 of three"] == 2
    assert fake.prompts["third of three"] == 1
