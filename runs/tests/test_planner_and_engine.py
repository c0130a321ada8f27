"""The run engine end to end: Celery tasks run inline after commit (``engine_inline``), so a run
goes as far as it can before the call that started it returns. Providers are the offline echo
provider or a real local HTTP server speaking the OpenAI wire format; nothing of ours is patched."""

import json
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from agents.tests.provider_server import ProviderServer
from policies.models import SpendEntry
from runs import services
from runs.choices import EventType, RunStatus, StepStatus
from runs.engine import core
from runs.models import Approval, Run, RunEvent, RunStep
from sparkops.roles import Role
from workflows.models import WorkflowVersion

from .factories import (
    EXPR_SCHEMA,
    agent_step,
    approval_step,
    bare_run,
    condition_step,
    echo_agent,
    event_types,
    events,
    llm_calls,
    make_catalog,
    make_workflow,
    openai_agent,
    start,
    statuses,
    step_of,
    tool_step,
)

SUCCEEDED, SKIPPED, FAILED = StepStatus.SUCCEEDED, StepStatus.SKIPPED, StepStatus.FAILED
MTOK = Decimal(1_000_000)


def echo_tokens(text: str) -> int:
    """What the echo provider counts: about four characters a token."""
    return -(-len(text) // 4)


def echo_cost(input_tokens: int, output_tokens: int) -> Decimal:
    return (Decimal("1.00") * input_tokens + Decimal("2.00") * output_tokens) / MTOK


@pytest.fixture
def catalog(team):
    return make_catalog(team.project)


@pytest.fixture
def server(settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    fake = ProviderServer().start()
    yield fake
    fake.stop()


def chat(text: str = "", *, calls: list[tuple[str, dict]] = (), prompt_tokens: int = 11, completion_tokens: int = 7):
    """An OpenAI Chat Completions answer: text, or tool calls as (name, arguments)."""
    message = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = [
            {"id": f"call_{n}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
            for n, (name, arguments) in enumerate(calls)
        ]
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
    return {"model": "local-model", "choices": [{"message": message, "finish_reason": "stop"}], "usage": usage}


def reload(run: Run) -> Run:
    run.refresh_from_db()
    return run


def assert_gapless(run: Run) -> None:
    sequences = list(RunEvent.objects.filter(run=run).order_by("sequence").values_list("sequence", flat=True))
    assert sequences == list(range(1, len(sequences) + 1))
    assert Run.objects.get(pk=run.pk).event_seq == len(sequences)


# ------------------------------------------------------------------------------
# Linear runs, accounting and the event log
# ------------------------------------------------------------------------------
def test_a_linear_run_succeeds_with_each_steps_output(engine, catalog):
    run = start(make_workflow(catalog.project))

    assert run.status == RunStatus.SUCCEEDED
    assert statuses(run) == {"a": SUCCEEDED, "b": SUCCEEDED}
    assert run.outputs == {"a": "echo: Hello Ada", "b": "echo: Again: echo: Hello Ada"}
    assert run.started_at is not None
    assert run.finished_at >= run.started_at
    a = step_of(run, "a")
    assert a.input == {"agent": "writer", "prompt": "Hello Ada"}
    assert (a.agent, a.provider, a.model, a.attempt) == (catalog.writer, "echo", "echo-1", 1)
    assert a.lease_expires_at is None
    assert a.latency_ms is not None


def test_each_step_records_its_tokens_and_cost_and_the_run_totals_are_their_sum(engine, catalog):
    run = start(make_workflow(catalog.project))

    a, b = step_of(run, "a"), step_of(run, "b")
    assert (a.input_tokens, a.output_tokens) == (echo_tokens("Hello Ada"), echo_tokens("echo: Hello Ada"))
    assert a.cost_usd == echo_cost(a.input_tokens, a.output_tokens) > 0
    assert b.input_tokens == echo_tokens("Again: echo: Hello Ada")
    assert b.cost_usd == echo_cost(b.input_tokens, b.output_tokens)
    assert run.input_tokens == a.input_tokens + b.input_tokens
    assert run.output_tokens == a.output_tokens + b.output_tokens
    assert run.cost_usd == a.cost_usd + b.cost_usd
    assert run.unpriced_calls == a.unpriced_calls == 0
    (call,) = events(run, EventType.LLM_CALL)[:1]
    assert call.payload["input_tokens"] == a.input_tokens
    assert Decimal(call.payload["cost_usd"]) == a.cost_usd


def test_the_event_log_is_numbered_one_to_n_without_gaps(engine, catalog):
    run = start(make_workflow(catalog.project))

    sequences = list(RunEvent.objects.filter(run=run).order_by("sequence").values_list("sequence", flat=True))
    assert sequences == list(range(1, len(sequences) + 1))
    assert run.event_seq == len(sequences)
    types = event_types(run)
    assert types[0] == EventType.RUN_QUEUED
    assert types[-1] == EventType.RUN_SUCCEEDED
    for expected in (EventType.STEP_STARTED, EventType.LLM_CALL, EventType.STEP_SUCCEEDED, EventType.RUN_STARTED):
        assert expected in types
    assert types.count(EventType.LLM_CALL) == 2
    # b starts only after a succeeded.
    started = [e.step.key for e in events(run, EventType.STEP_STARTED)]
    assert started == ["a", "b"]


def test_parallel_branches_both_run_and_a_join_waits_for_both(engine, catalog):
    workflow = make_workflow(
        catalog.project,
        agent_step("a"),
        agent_step("left", prompt="L {{ steps.a.output }}", depends_on=["a"]),
        agent_step("right", prompt="R {{ steps.a.output }}", depends_on=["a"]),
        agent_step("join", prompt="{{ steps.left.output }} + {{ steps.right.output }}", depends_on=["left", "right"]),
    )
    run = start(workflow)

    assert run.status == RunStatus.SUCCEEDED
    assert set(statuses(run).values()) == {SUCCEEDED}
    assert llm_calls(run, "left") == llm_calls(run, "right") == 1
    assert run.outputs["join"] == "echo: echo: L echo: Hello Ada + echo: R echo: Hello Ada"
    order = [e.step.key for e in events(run, EventType.STEP_STARTED)]
    assert order[0] == "a"
    assert order[-1] == "join"


@pytest.mark.parametrize(
    ("expr", "taken", "untaken"),
    [("6*3", "big", ["small", "after_small"]), ("2+3", "small", ["big"])],
)
def test_a_condition_runs_one_branch_and_skips_the_other_and_everything_after_it(engine, catalog, expr, taken, untaken):
    workflow = make_workflow(
        catalog.project,
        tool_step("n"),
        condition_step("check", "{{ steps.n.output }}", ">", 10, then=["big"], otherwise=["small"], depends_on=["n"]),
        agent_step("big", prompt="big {{ inputs.expr }}"),
        agent_step("small", prompt="small {{ inputs.expr }}"),
        agent_step("after_small", prompt="after {{ steps.small.output }}", depends_on=["small"]),
        schema=EXPR_SCHEMA,
    )
    run = start(workflow, {"expr": expr})

    assert run.status == RunStatus.SUCCEEDED
    assert step_of(run, taken).status == SUCCEEDED
    assert {key: statuses(run)[key] for key in untaken} == dict.fromkeys(untaken, SKIPPED)
    check = step_of(run, "check")
    assert check.output == {"result": taken == "big", "branch": "then" if taken == "big" else "else"}
    assert {e.step.key for e in events(run, EventType.STEP_SKIPPED)} == set(untaken)
    assert all(llm_calls(run, key) == 0 for key in untaken)
    assert set(run.outputs) == {"n", "check", taken} | ({"after_small"} if taken == "small" else set())


def test_a_tool_step_renders_its_input_and_records_the_call(engine, catalog):
    workflow = make_workflow(catalog.project, tool_step("double", "({{ inputs.expr }}) * 2"), schema=EXPR_SCHEMA)
    run = start(workflow, {"expr": "3+4"})

    assert run.status == RunStatus.SUCCEEDED
    step = step_of(run, "double")
    assert step.output == 14
    assert run.outputs == {"double": 14}
    assert step.input == {"tool": "calc", "input": {"expression": "(3+4) * 2"}}
    assert step.tool == catalog.calc
    (call,) = events(run, EventType.TOOL_CALL)
    assert call.payload | {"latency_ms": 0} == {
        "key": "double",
        "tool": "calc",
        "arguments": {"expression": "(3+4) * 2"},
        "output": 14,
        "error": "",
        "latency_ms": 0,
    }
    assert (step.input_tokens, step.cost_usd, run.cost_usd) == (0, 0, 0)


def test_a_tool_step_with_bad_input_fails_permanently(engine, catalog):
    workflow = make_workflow(catalog.project, tool_step("calc"), schema=EXPR_SCHEMA)
    run = reload(start(workflow, {"expr": "1/0"}))

    step = step_of(run, "calc")
    assert (run.status, step.status, step.attempt) == (RunStatus.FAILED, FAILED, 1)
    assert step.error["permanent"] is True
    assert step.error["type"] == "ToolError"
    assert run.error["step"] == "calc"


def test_an_agent_calls_its_tool_and_answers_with_the_result(engine, catalog):
    prompt = 'Compute [[tool:calc {"expression": "6*7"}]] now'
    run = start(make_workflow(catalog.project, agent_step("a", agent="helper", prompt=prompt)))

    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs["a"] == 'echo: Compute  now | tool results: {"output": 42}'
    (call,) = events(run, EventType.TOOL_CALL)
    assert (call.step.key, call.payload["tool"], call.payload["output"]) == ("a", "calc", 42)
    assert call.payload["arguments"] == {"expression": "6*7"}
    assert call.payload["error"] == ""
    assert [e.payload["iteration"] for e in events(run, EventType.LLM_CALL)] == [0, 1]
    assert events(run, EventType.LLM_CALL)[0].payload["tool_calls"] == ["calc"]
    step = step_of(run, "a")
    assert step.input_tokens == sum(e.payload["input_tokens"] for e in events(run, EventType.LLM_CALL))


def test_a_tool_the_agent_may_not_use_is_told_to_the_model_and_not_run(engine, team, catalog, server):
    openai_agent(team.project, server.url)  # has no tools, though calc exists in the project
    server.reply(chat(calls=[("calc", {"expression": "1+1"})]))
    server.reply(chat("I could not use it."))
    run = start(make_workflow(team.project, agent_step("a", agent="remote")))

    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"a": "I could not use it."}
    (call,) = events(run, EventType.TOOL_CALL)
    assert call.payload["output"] is None
    assert call.payload["error"] == "Tool 'calc' is not available to this agent."
    answer = server.requests[1].json()["messages"][-1]
    assert answer["role"] == "tool"
    assert "not available" in answer["content"]


def test_an_agent_still_calling_tools_after_its_limit_fails_permanently(engine, team, catalog, server):
    openai_agent(team.project, server.url, tools=[catalog.calc], max_tool_iterations=1)
    server.reply(chat(calls=[("calc", {"expression": "1+1"})]))
    server.reply(chat(calls=[("calc", {"expression": "2+2"})]))
    run = reload(start(make_workflow(team.project, agent_step("a", agent="remote", retry={"attempts": 3}))))

    step = step_of(run, "a")
    assert (run.status, step.status, step.attempt) == (RunStatus.FAILED, FAILED, 1)
    assert step.error == {"type": "ToolLoopLimit", "message": step.error["message"], "permanent": True}
    assert len(server.requests) == 2
    assert len(events(run, EventType.TOOL_CALL)) == 1
    # The calls it made are paid for, failed or not.
    assert step.input_tokens == 22
    assert run.input_tokens == 22
    assert run.unpriced_calls == 2


def test_a_step_naming_a_missing_agent_fails_the_run_with_the_step_named(engine, team, catalog):
    echo_agent(team.project, "ghost")
    workflow = make_workflow(team.project, agent_step("a", agent="ghost"), agent_step("b", depends_on=["a"]))
    team.project.agents.filter(slug="ghost").delete()
    run = reload(start(workflow))

    a = step_of(run, "a")
    assert (run.status, a.status, a.attempt) == (RunStatus.FAILED, FAILED, 1)
    assert a.error["type"] == "AgentUnavailable"
    assert a.error["permanent"] is True
    assert run.error["step"] == "a"
    assert "ghost" in run.error["message"]
    assert step_of(run, "b").status == StepStatus.CANCELLED
    assert event_types(run)[-1] == EventType.RUN_FAILED


# ------------------------------------------------------------------------------
# Transient and permanent provider failures (a real local server)
# ------------------------------------------------------------------------------
def remote_workflow(project, server, attempts: int = 3, backoff: int = 0):
    openai_agent(project, server.url)
    return make_workflow(
        project, agent_step("a", agent="remote", retry={"attempts": attempts, "backoff_seconds": backoff})
    )


def test_a_transient_failure_is_retried_and_the_second_attempt_succeeds(engine, team, catalog, server):
    workflow = remote_workflow(team.project, server)
    server.reply({"error": "boom"}, status=500)
    server.reply(chat("fine now", prompt_tokens=20, completion_tokens=4))
    run = reload(start(workflow))

    step = step_of(run, "a")
    assert (run.status, step.status, step.attempt) == (RunStatus.SUCCEEDED, SUCCEEDED, 2)
    assert step.output == "fine now"
    assert step.error == {}
    (retrying,) = events(run, EventType.STEP_RETRYING)
    assert retrying.payload["attempt"] == 1
    assert retrying.payload["permanent"] is False
    assert retrying.payload["type"] == "ProviderError"
    assert "500" in retrying.payload["message"]
    assert len(server.requests) == 2
    # Only the answered call has usage; it is unpriced, so counted as such and not as $0.
    assert (step.input_tokens, step.output_tokens, step.unpriced_calls) == (20, 4, 1)
    assert (run.input_tokens, run.unpriced_calls, run.cost_usd) == (20, 1, 0)


def test_retry_after_sets_the_retry_delay(engine, team, catalog, server):
    workflow = remote_workflow(team.project, server, backoff=60)
    server.reply({"error": "slow down"}, status=429, headers={"Retry-After": "7"})
    server.reply(chat("ok"))
    run = reload(start(workflow))

    (retrying,) = events(run, EventType.STEP_RETRYING)
    assert retrying.payload["delay_seconds"] == 7
    assert run.status == RunStatus.SUCCEEDED
    assert step_of(run, "a").attempt == 2


def test_backoff_doubles_with_each_attempt(engine, team, catalog, server):
    workflow = remote_workflow(team.project, server, attempts=3, backoff=5)
    server.reply({}, status=502)
    server.reply({}, status=503)
    server.reply(chat("ok"))
    run = reload(start(workflow))

    assert [e.payload["delay_seconds"] for e in events(run, EventType.STEP_RETRYING)] == [5, 10]
    assert run.status == RunStatus.SUCCEEDED
    assert step_of(run, "a").attempt == 3
    assert_gapless(run)


def test_a_permanent_failure_fails_at_once(engine, team, catalog, server):
    workflow = remote_workflow(team.project, server)
    server.reply({"error": "bad key"}, status=401)
    run = reload(start(workflow))

    step = step_of(run, "a")
    assert (run.status, step.status, step.attempt) == (RunStatus.FAILED, FAILED, 1)
    assert step.error["permanent"] is True
    assert "401" in step.error["message"]
    assert events(run, EventType.STEP_RETRYING) == []
    assert len(server.requests) == 1


def test_a_step_fails_when_its_retry_attempts_are_spent(engine, team, catalog, server):
    workflow = remote_workflow(team.project, server, attempts=2)
    server.reply({}, status=500)
    server.reply({}, status=500)
    run = reload(start(workflow))

    step = step_of(run, "a")
    assert (run.status, step.status, step.attempt) == (RunStatus.FAILED, FAILED, 2)
    assert step.error["permanent"] is False
    assert len(events(run, EventType.STEP_RETRYING)) == 1
    assert len(server.requests) == 2
    assert run.error == {"step": "a", **step.error}


# ------------------------------------------------------------------------------
# Approval gates
# ------------------------------------------------------------------------------
@pytest.fixture
def gated(engine, team, catalog) -> Run:
    """a, then a gate only admins may open, then b: parked at the gate."""
    workflow = make_workflow(
        team.project,
        agent_step("a"),
        approval_step("gate", role=Role.ADMIN, depends_on=["a"]),
        agent_step("b", prompt="after {{ steps.gate.output }}", depends_on=["gate"]),
    )
    return start(workflow)


def decide_url(run: Run, key: str, verb: str) -> str:
    return f"/api/v1/runs/{run.pk}/steps/{key}/{verb}"


def test_an_approval_gate_parks_the_step_and_the_run(gated):
    assert gated.status == RunStatus.WAITING_APPROVAL
    assert statuses(gated) == {"a": SUCCEEDED, "gate": StepStatus.WAITING_APPROVAL, "b": StepStatus.PENDING}
    assert step_of(gated, "gate").lease_expires_at is None
    types = event_types(gated)
    assert types[-2:] == [EventType.STEP_WAITING_APPROVAL, EventType.RUN_WAITING_APPROVAL]


def test_an_approval_needs_the_steps_role_then_the_run_continues(gated, team):
    refused = team.client(Role.DEVELOPER).post(decide_url(gated, "gate", "approve"), {"comment": "me?"})
    assert refused.status_code == 403
    assert step_of(gated, "gate").status == StepStatus.WAITING_APPROVAL
    assert not Approval.objects.exists()

    response = team.client(Role.ADMIN).post(decide_url(gated, "gate", "approve"), {"comment": "ok"})

    assert response.status_code == 200, response.json()
    run = reload(gated)
    assert run.status == RunStatus.SUCCEEDED
    assert set(statuses(run).values()) == {SUCCEEDED}
    admin = team.members[Role.ADMIN]
    assert step_of(run, "gate").output == {"approved": True, "by": admin.email, "comment": "ok"}
    approval = Approval.objects.get(step__run=run)
    assert (approval.decision, approval.decided_by, approval.comment) == ("approved", admin, "ok")
    assert EventType.STEP_APPROVED in event_types(run)
    assert EventType.RUN_RESUMED in event_types(run)


def test_a_rejection_fails_the_step_and_the_run(gated, team):
    response = team.client(Role.OWNER).post(decide_url(gated, "gate", "reject"), {"comment": "no"})

    assert response.status_code == 200
    run = reload(gated)
    gate = step_of(run, "gate")
    assert (run.status, gate.status) == (RunStatus.FAILED, FAILED)
    assert gate.error["type"] == "Rejected"
    assert gate.error["permanent"] is True
    assert run.error["step"] == "gate"
    assert step_of(run, "b").status == StepStatus.CANCELLED
    assert llm_calls(run, "b") == 0
    assert_gapless(gated)


def test_a_gate_saved_naming_viewers_before_they_were_refused_needs_a_developer(engine, team, catalog):
    workflow = make_workflow(team.project, approval_step("gate", role=Role.DEVELOPER))
    version = workflow.versions.get()
    # What a version published before the rule holds: a gate a viewer could open.
    WorkflowVersion.objects.filter(pk=version.pk).update(definition={"steps": [approval_step("gate", role="viewer")]})
    run = start(workflow)

    refused = team.client(Role.VIEWER).post(decide_url(run, "gate", "approve"))

    assert refused.status_code == 403
    assert "developer" in refused.json()["message"]
    assert not Approval.objects.exists()
    assert team.client(Role.DEVELOPER).post(decide_url(run, "gate", "approve")).status_code == 200
    assert reload(run).status == RunStatus.SUCCEEDED


@pytest.mark.parametrize("second", ["approve", "reject"])
def test_deciding_twice_is_a_conflict(gated, team, second):
    client = team.client(Role.ADMIN)
    assert client.post(decide_url(gated, "gate", "approve")).status_code == 200

    response = client.post(decide_url(gated, "gate", second))

    assert response.status_code == 409
    assert Approval.objects.filter(step__run=gated).count() == 1
    assert reload(gated).status == RunStatus.SUCCEEDED


# ------------------------------------------------------------------------------
# Claims: one execution per step, whatever the deliveries (no inline engine: rows set up by hand)
# ------------------------------------------------------------------------------
@pytest.fixture
def queued_step(catalog) -> RunStep:
    run = start(make_workflow(catalog.project, agent_step("a")))
    step = step_of(run, "a")
    RunStep.objects.filter(pk=step.pk).update(status=StepStatus.QUEUED, lease_expires_at=timezone.now())
    return step


def test_a_queued_step_is_claimed_once(queued_step):
    claimed = core.claim(queued_step.pk)

    assert claimed is not None
    assert (claimed.status, claimed.attempt) == (StepStatus.RUNNING, 1)
    assert claimed.lease_expires_at > timezone.now()
    assert core.claim(queued_step.pk) is None
    assert RunStep.objects.get(pk=queued_step.pk).attempt == 1


def test_a_running_step_with_a_live_lease_cannot_be_claimed(queued_step):
    core.claim(queued_step.pk)
    assert core.claim(queued_step.pk) is None


def test_a_running_step_whose_lease_expired_is_claimed_again(queued_step):
    core.claim(queued_step.pk)
    RunStep.objects.filter(pk=queued_step.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    again = core.claim(queued_step.pk)

    assert again is not None
    assert (again.status, again.attempt) == (StepStatus.RUNNING, 2)


@pytest.mark.parametrize("status", [StepStatus.PENDING, StepStatus.SUCCEEDED, StepStatus.CANCELLED])
def test_a_step_that_is_not_queued_or_running_is_not_claimed(queued_step, status):
    RunStep.objects.filter(pk=queued_step.pk).update(status=status)
    assert core.claim(queued_step.pk) is None
    assert core.claim(999_999) is None


def test_executing_a_step_of_a_cancelling_run_cancels_it_without_calling_anything(queued_step):
    Run.objects.filter(pk=queued_step.run_id).update(status=RunStatus.CANCELLING)

    core.execute(queued_step.pk)

    step = RunStep.objects.get(pk=queued_step.pk)
    assert step.status == StepStatus.CANCELLED
    assert step.finished_at is not None
    assert not RunEvent.objects.filter(run_id=step.run_id, type=EventType.LLM_CALL).exists()


def lost(step: RunStep, *, times: int) -> None:
    """The step is running, and its worker died ``times`` times while running it (the last one
    with it now: the lease has expired)."""
    past = timezone.now() - timedelta(seconds=1)
    RunStep.objects.filter(pk=step.pk).update(
        status=StepStatus.RUNNING, attempt=times, lost_workers=times - 1, lease_expires_at=past
    )


def test_a_step_whose_worker_died_three_times_fails_as_poison_without_a_fourth_execution(queued_step):
    lost(queued_step, times=core.POISON_AFTER_LOST_WORKERS)

    core.execute(queued_step.pk)

    step = RunStep.objects.get(pk=queued_step.pk)
    assert step.status == FAILED
    assert step.lost_workers == core.POISON_AFTER_LOST_WORKERS
    assert step.error == {
        "type": "Poison",
        "message": "Its worker died 3 times while running it; it is not run again.",
        "permanent": True,
    }
    assert not RunEvent.objects.filter(run_id=step.run_id, type=EventType.LLM_CALL).exists()
    assert not RunEvent.objects.filter(run_id=step.run_id, type=EventType.STEP_STARTED).exists()
    assert reload(step.run).error["type"] == "Poison"


def test_a_step_handed_back_by_a_stopping_worker_is_not_counted_as_a_crash(queued_step):
    from runs import shutdown

    lost(queued_step, times=core.POISON_AFTER_LOST_WORKERS)
    # A deploy stops the worker running the third attempt: it hands the step back (hand_back's
    # write, without its closing of the shutdown thread's connection and its re-publish).
    shutdown.shorten_lease(RunStep.objects.get(pk=queued_step.pk), timezone.now() - timedelta(seconds=1))

    core.execute(queued_step.pk)

    step = RunStep.objects.get(pk=queued_step.pk)
    assert (step.status, step.lost_workers) == (SUCCEEDED, core.POISON_AFTER_LOST_WORKERS)
    (handed_back,) = RunEvent.objects.filter(run_id=step.run_id, type=EventType.STEP_HANDED_BACK)
    assert handed_back.payload == {"key": "a", "attempt": core.POISON_AFTER_LOST_WORKERS}


def test_a_step_whose_worker_died_fewer_times_runs_and_its_start_says_so(queued_step):
    lost(queued_step, times=core.POISON_AFTER_LOST_WORKERS - 1)

    core.execute(queued_step.pk)

    step = RunStep.objects.get(pk=queued_step.pk)
    assert (step.status, step.attempt, step.lost_workers) == (SUCCEEDED, 3, 2)
    (started,) = RunEvent.objects.filter(run_id=step.run_id, type=EventType.STEP_STARTED)
    assert started.payload == {"key": "a", "attempt": 3, "lost_workers": 2}


def test_the_start_of_an_attempt_is_written_when_it_is_claimed(queued_step):
    core.claim(queued_step.pk)

    (started,) = RunEvent.objects.filter(run_id=queued_step.run_id, type=EventType.STEP_STARTED)
    assert started.payload == {"key": "a", "attempt": 1}
    assert core.claim(queued_step.pk) is None
    assert RunEvent.objects.filter(run_id=queued_step.run_id, type=EventType.STEP_STARTED).count() == 1
    assert reload(queued_step.run).event_seq == started.sequence  # the refused claim took no number


def test_a_lost_worker_does_not_use_up_the_steps_retries(engine, team, catalog, server):
    run = bare_run(remote_workflow(team.project, server, attempts=2), status=RunStatus.RUNNING)
    step = step_of(run, "a")
    RunStep.objects.filter(pk=step.pk).update(max_attempts=2)
    # Its worker died twice during a step of two attempts: takeovers are not retries...
    lost(step, times=2)
    server.reply({"error": "boom"}, status=500)
    server.reply(chat("fine"))

    core.execute(step.pk)

    # ...so the transient failure of the third execution is the first, and is retried.
    step.refresh_from_db()
    assert (step.status, step.attempt, step.lost_workers, step.output) == (SUCCEEDED, 4, 2, "fine")


class TakenOverDuringCall(ProviderServer):
    """A provider whose call is still in flight when the step's lease runs out and another worker
    takes the step over (done from the server's thread, as that worker would)."""

    def next_reply(self):
        try:
            RunStep.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))
            for step in RunStep.objects.filter(status=StepStatus.RUNNING):
                self.taken_over = core.claim(step.pk)
        finally:
            connection.close()  # this thread's own connection
        return super().next_reply()


def test_a_late_outcome_from_a_worker_that_was_taken_over_is_refused_and_logged(engine, settings, team, catalog):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    server = TakenOverDuringCall().start()
    try:
        openai_agent(team.project, server.url)
        server.reply(chat("late", prompt_tokens=30))
        run = reload(start(make_workflow(team.project, agent_step("a", agent="remote"))))
    finally:
        server.stop()

    step = step_of(run, "a")
    # The step belongs to the worker that took it over; the late success changed nothing...
    assert (step.status, step.attempt, step.lost_workers, step.output) == (StepStatus.RUNNING, 2, 1, None)
    assert run.status == RunStatus.RUNNING
    # ...but the log shows both starts, the call that was made, and the refused outcome.
    started = [e.payload["attempt"] for e in events(run, EventType.STEP_STARTED)]
    assert started == [1, 2]
    (refused,) = events(run, EventType.STEP_OUTCOME_REFUSED)
    assert refused.payload == {"key": "a", "attempt": 1, "outcome": "succeeded"}
    assert llm_calls(run, "a") == 1
    assert (step.input_tokens, run.input_tokens) == (30, 30)  # the call was made and billed, so it counts
    assert_gapless(run)


def test_executing_twice_runs_the_step_once(queued_step):
    core.execute(queued_step.pk)
    core.execute(queued_step.pk)

    assert RunEvent.objects.filter(run_id=queued_step.run_id, type=EventType.LLM_CALL).count() == 1
    assert RunStep.objects.get(pk=queued_step.pk).attempt == 1


# ------------------------------------------------------------------------------
# The reaper
# ------------------------------------------------------------------------------
def test_reap_finishes_a_run_whose_advance_was_never_enqueued(engine, catalog):
    run = bare_run(make_workflow(catalog.project))
    Run.objects.filter(pk=run.pk).update(updated_at=timezone.now() - core.STALE_RUN - timedelta(seconds=1))

    assert core.reap() == {"steps": 0, "runs": 1, "reservations": 0}

    run = reload(run)
    assert run.status == RunStatus.SUCCEEDED
    assert set(statuses(run).values()) == {SUCCEEDED}


def test_reap_leaves_a_fresh_queued_run_alone(engine, catalog):
    run = bare_run(make_workflow(catalog.project))

    assert core.reap() == {"steps": 0, "runs": 0, "reservations": 0}
    assert reload(run).status == RunStatus.QUEUED


def test_reap_redispatches_a_queued_step_whose_message_was_lost(engine, catalog):
    run = bare_run(make_workflow(catalog.project), status=RunStatus.RUNNING)
    past = timezone.now() - timedelta(seconds=1)
    RunStep.objects.filter(run=run, key="a").update(status=StepStatus.QUEUED, lease_expires_at=past)

    assert core.reap() == {"steps": 1, "runs": 0, "reservations": 0}

    run = reload(run)
    assert run.status == RunStatus.SUCCEEDED
    assert step_of(run, "a").attempt == 1


def test_reap_takes_over_a_running_step_whose_worker_died(engine, catalog):
    run = bare_run(make_workflow(catalog.project), status=RunStatus.RUNNING)
    past = timezone.now() - timedelta(seconds=1)
    RunStep.objects.filter(run=run, key="a").update(status=StepStatus.RUNNING, attempt=1, lease_expires_at=past)

    assert core.reap()["steps"] == 1

    run = reload(run)
    assert run.status == RunStatus.SUCCEEDED
    assert step_of(run, "a").attempt == 2
    assert llm_calls(run, "a") == 1


def test_reap_advances_a_run_whose_step_settled_but_that_never_moved(engine, catalog):
    # Its worker died after writing step a's outcome, before advancing the run.
    run = bare_run(make_workflow(catalog.project), status=RunStatus.RUNNING)
    RunStep.objects.filter(run=run, key="a").update(status=SUCCEEDED, attempt=1, output="echo: Hello Ada")
    Run.objects.filter(pk=run.pk).update(updated_at=timezone.now() - core.STRANDED_RUN - timedelta(seconds=1))

    assert core.reap() == {"steps": 0, "runs": 1, "reservations": 0}

    run = reload(run)
    assert run.status == RunStatus.SUCCEEDED
    assert (step_of(run, "a").attempt, step_of(run, "b").attempt) == (1, 1)


def test_reap_leaves_a_running_run_with_a_step_in_flight_or_waiting_alone(engine, catalog):
    running = bare_run(make_workflow(catalog.project), status=RunStatus.RUNNING)
    future = timezone.now() + timedelta(minutes=5)
    RunStep.objects.filter(run=running, key="a").update(status=StepStatus.RUNNING, lease_expires_at=future)
    waiting = bare_run(make_workflow(catalog.project, slug="other"), status=RunStatus.WAITING_APPROVAL)
    RunStep.objects.filter(run=waiting, key="a").update(status=StepStatus.WAITING_APPROVAL)
    old = timezone.now() - core.STRANDED_RUN - timedelta(seconds=1)
    Run.objects.filter(pk__in=[running.pk, waiting.pk]).update(updated_at=old)

    assert core.reap() == {"steps": 0, "runs": 0, "reservations": 0}


def test_a_redelivered_message_of_a_settled_step_advances_its_run(queued_step):
    core.claim(queued_step.pk)
    RunStep.objects.filter(pk=queued_step.pk).update(status=SUCCEEDED, output="echo: Hello Ada")
    Run.objects.filter(pk=queued_step.run_id).update(status=RunStatus.RUNNING)

    core.execute(queued_step.pk)  # claims nothing, but the run moves on

    run = reload(queued_step.run)
    assert (run.status, run.outputs) == (RunStatus.SUCCEEDED, {"a": "echo: Hello Ada"})


def test_reap_leaves_a_running_step_with_a_live_lease_alone(engine, catalog):
    run = bare_run(make_workflow(catalog.project), status=RunStatus.RUNNING)
    future = timezone.now() + timedelta(minutes=5)
    RunStep.objects.filter(run=run, key="a").update(status=StepStatus.RUNNING, attempt=1, lease_expires_at=future)

    assert core.reap() == {"steps": 0, "runs": 0, "reservations": 0}
    assert step_of(run, "a").status == StepStatus.RUNNING


# ------------------------------------------------------------------------------
# Cancelling a run in flight
# ------------------------------------------------------------------------------
def test_a_running_step_sees_the_cancel_at_its_next_delivery_and_the_run_ends_cancelled(engine, catalog):
    run = bare_run(make_workflow(catalog.project), status=RunStatus.RUNNING)
    future = timezone.now() + timedelta(minutes=5)
    RunStep.objects.filter(run=run, key="a").update(status=StepStatus.RUNNING, attempt=1, lease_expires_at=future)

    services.run_cancel(run=run)

    # The running step keeps its worker; what had not started is cancelled at once.
    assert reload(run).status == RunStatus.CANCELLING
    assert statuses(run) == {"a": StepStatus.RUNNING, "b": StepStatus.CANCELLED}

    # Its worker died: the reaper delivers it again, and the claim finds the run cancelling.
    RunStep.objects.filter(run=run, key="a").update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    core.reap()

    run = reload(run)
    assert run.status == RunStatus.CANCELLED
    assert run.finished_at is not None
    assert statuses(run) == {"a": StepStatus.CANCELLED, "b": StepStatus.CANCELLED}
    assert llm_calls(run, "a") == 0
    assert event_types(run)[-1] == EventType.RUN_CANCELLED
    assert_gapless(run)


class CancelDuringCall(ProviderServer):
    """A provider whose call is in flight when someone cancels the run (from the server's thread,
    as another request would)."""

    def next_reply(self):
        try:
            for run in Run.objects.filter(status=RunStatus.RUNNING):
                services.run_cancel(run=run)
        finally:
            connection.close()  # this thread's own connection
        return super().next_reply()


def test_a_call_that_returns_after_a_cancel_is_counted_but_not_used(engine, settings, team, catalog):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    server = CancelDuringCall().start()
    try:
        openai_agent(team.project, server.url)
        server.reply(chat("too late", prompt_tokens=30))
        run = reload(
            start(make_workflow(team.project, agent_step("a", agent="remote"), agent_step("b", depends_on=["a"])))
        )
    finally:
        server.stop()

    assert run.status == RunStatus.CANCELLED
    assert statuses(run) == {"a": StepStatus.CANCELLED, "b": StepStatus.CANCELLED}
    a = step_of(run, "a")
    assert (a.input_tokens, run.input_tokens, a.output) == (30, 30, None)
    assert len(server.requests) == 1
    assert "too late" not in json.dumps(run.outputs)
    assert llm_calls(run, "a") == 1
    assert EventType.STEP_SUCCEEDED not in event_types(run)


# ------------------------------------------------------------------------------
# Idempotency keys on HTTP tool calls
# ------------------------------------------------------------------------------
def http_tool(project, url: str):
    from agents import services as agent_services
    from agents.models import Tool

    tool = Tool(project=project, slug="hook", name="Hook", kind="http", config={"method": "POST", "url": url})
    return agent_services.tool_save(tool=tool)


def sent_keys(server) -> list[str]:
    return [r.headers["idempotency-key"] for r in server.requests if r.path == "/hook"]


def test_two_tool_calls_in_one_attempt_carry_different_keys(engine, team, server):
    hook = http_tool(team.project, server.url + "/hook")
    openai_agent(team.project, server.url, tools=[hook])
    server.reply(chat(calls=[("hook", {"n": 1}), ("hook", {"n": 1})]))
    server.reply({"ok": True})
    server.reply({"ok": True})
    server.reply(chat("done"))
    run = start(make_workflow(team.project, agent_step("a", agent="remote")))

    assert run.status == RunStatus.SUCCEEDED
    first, second = sent_keys(server)
    assert first.startswith(f"{run.pk}:a:1:1:")
    assert second.startswith(f"{run.pk}:a:1:2:")
    assert first.rsplit(":", 1)[1] == second.rsplit(":", 1)[1]  # the same call, made twice on purpose


def test_a_retried_tool_call_gets_a_new_key_and_the_same_call_digest(engine, team, server):
    http_tool(team.project, server.url + "/hook")
    server.reply({"error": "busy"}, status=503)
    server.reply({"ok": True})
    step = {"key": "notify", "kind": "tool", "tool": "hook", "input": {"text": "hi"}}
    run = start(make_workflow(team.project, {**step, "retry": {"attempts": 2, "backoff_seconds": 0}}))

    assert run.status == RunStatus.SUCCEEDED
    first, second = sent_keys(server)
    assert first.split(":")[1:4] == ["notify", "1", "1"]
    assert second.split(":")[1:4] == ["notify", "2", "1"]
    assert first.split(":")[4] == second.split(":")[4]


def test_a_tool_call_cut_at_the_step_timeout_fails_the_agent_step_as_a_timeout(engine, team, server):
    hook = http_tool(team.project, server.url + "/hook")  # the tool's own timeout: 10 s
    openai_agent(team.project, server.url, tools=[hook])
    server.reply(chat(calls=[("hook", {"n": 1})]))
    server.reply({"ok": True}, delay=5)
    step = agent_step("a", agent="remote", timeout_seconds=1, retry={"attempts": 1})
    run = reload(start(make_workflow(team.project, step)))

    step = step_of(run, "a")
    assert (run.status, step.status) == (RunStatus.FAILED, FAILED)
    assert step.error["type"] == "Timeout", (step.error, [e.payload for e in events(run, EventType.TOOL_CALL)])
    assert len(server.requests) == 2  # the model is not asked again: the step has no time left


@contextmanager
def losing_the_answer_to_the_success_commit(event: str = EventType.STEP_SUCCEEDED):
    """The connection drops once, right after the COMMIT of a step's success (or of the write of
    another ``event``) reached the database, before its answer came back to the worker. Yields a
    list that holds True once it dropped."""
    dropped = []

    def drop_once() -> None:
        if not dropped:
            dropped.append(True)
            raise OperationalError("server closed the connection unexpectedly")

    def after_the_outcome_commits(execute, sql, params, many, context):
        # PostgreSQL's bulk insert sends a column per parameter (UNNEST), SQLite a value each.
        values = [v for p in params or [] for v in (p if isinstance(p, list | tuple) else [p])]
        if "runs_runevent" in sql and event in values:
            transaction.on_commit(drop_once)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(after_the_outcome_commits):
        yield dropped


def test_an_outcome_whose_commit_answer_was_lost_is_not_written_twice(transactional_db, queued_step):
    """The connection drops after the outcome's COMMIT reached the database, before its answer came
    back: the worker writes again through a new connection, and finds its own outcome there."""
    with losing_the_answer_to_the_success_commit() as dropped:
        core.execute(queued_step.pk)

    step = RunStep.objects.get(pk=queued_step.pk)
    assert dropped
    assert step.status == SUCCEEDED
    assert step.input_tokens > 0
    assert reload(step.run).input_tokens == step.input_tokens  # counted once, on the run and the step
    types = list(RunEvent.objects.filter(run_id=step.run_id, step=step).values_list("type", flat=True))
    assert types.count(EventType.STEP_SUCCEEDED) == types.count(EventType.LLM_CALL) == 1
    assert EventType.STEP_OUTCOME_REFUSED not in types
    assert SpendEntry.objects.filter(step=step).count() == 1


def test_a_call_in_a_tool_loop_whose_commit_answer_was_lost_is_not_written_twice(transactional_db, catalog):
    """An agent's call before its tools are run is written in a transaction of its own, as soon as
    it returns. The commit's answer is lost: the retry finds the call written and writes nothing
    more, so its tokens, cost and event count once."""
    prompt = 'Compute [[tool:calc {"expression": "6*7"}]] now'
    run = start(make_workflow(catalog.project, agent_step("a", agent="helper", prompt=prompt)))
    with losing_the_answer_to_the_success_commit(EventType.LLM_CALL) as dropped:
        core.execute(step_of(run, "a").pk)

    assert dropped == [True]
    run = reload(run)
    assert run.status == RunStatus.SUCCEEDED
    calls = events(run, EventType.LLM_CALL)
    assert [e.payload["iteration"] for e in calls] == [0, 1]
    assert len(events(run, EventType.TOOL_CALL)) == 1
    step = step_of(run, "a")
    assert run.input_tokens == step.input_tokens == sum(e.payload["input_tokens"] for e in calls)
    assert SpendEntry.objects.filter(step=step).count() == 2
    assert_gapless(run)


def test_a_success_whose_commit_answer_was_lost_still_runs_the_step_its_advance_claimed(transactional_db, catalog):
    """A success advances its run in the same transaction: here that advance claims ``b`` for this
    task. The commit's answer is lost; the retry finds the outcome written, and ``b``, claimed by
    that commit, still runs in this task: no takeover, no second start, no wait for its lease."""
    run = start(make_workflow(catalog.project, agent_step("a"), agent_step("b", depends_on=["a"])))
    with losing_the_answer_to_the_success_commit() as dropped:
        core.execute(step_of(run, "a").pk)

    assert dropped == [True]
    run = reload(run)
    assert run.status == RunStatus.SUCCEEDED
    b = step_of(run, "b")
    assert (b.status, b.attempt, b.lost_workers) == (SUCCEEDED, 1, 0)
    types = event_types(run)
    assert types.count(EventType.STEP_SUCCEEDED) == types.count(EventType.STEP_STARTED) == 2
    assert EventType.STEP_HANDED_BACK not in types
