"""Policies acting inside the engine, end to end: Celery tasks run inline after commit, providers
are the offline echo provider or a real local server. For each kind: allowed, blocked, warned
and (where the kind may ask) the approval path, with the reason the caller sees in the API."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from accounts.tests.factories import ApiKeyFactory
from agents.models import ModelPrice
from policies.choices import EntryStatus, Outcome, PolicyAction, PolicyKind, Stage
from policies.models import Policy, PolicyDecision, SpendEntry
from policies.selectors import budget_status
from policies.services import Call, spend_settle
from policies.tests.factories import PolicyFactory, SpendEntryFactory
from runs.choices import EventType, RunStatus, StepStatus
from runs.engine import core
from runs.models import Run, RunStep
from runs.tests.e2e_support import FakeOpenAI
from runs.tests.factories import (
    agent_step,
    approval_step,
    bare_run,
    echo_agent,
    echo_price,
    event_types,
    events,
    make_workflow,
    openai_agent,
    start,
    statuses,
    step_of,
    stocked,
    tool,
    tool_step,
)
from sparkops.roles import Role

USD = Decimal
MTOK = Decimal(1_000_000)
DEFAULT_OUTPUT = 4096  # settings.SPARKOPS_DEFAULT_MAX_OUTPUT_TOKENS
BLOCK, WARN, ASK = PolicyAction.BLOCK, PolicyAction.WARN, PolicyAction.REQUIRE_APPROVAL


# ------------------------------------------------------------------------------
# Fixtures and helpers
# ------------------------------------------------------------------------------
@pytest.fixture
def project(engine, team):
    """The team's project with the echo price, a read-only calc tool and two echo agents."""
    return stocked(team.project)


@pytest.fixture
def fake_openai(settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    server = FakeOpenAI()
    yield server
    server.stop()


def estimate(prompt: str, max_tokens: int = DEFAULT_OUTPUT, price=(1, 2)) -> tuple[Decimal, int]:
    """What the engine reserves for one call of a tool-less agent without a system prompt: every
    byte of the prompt a token, max_tokens out (runs.engine.calls.estimate_call)."""
    input_tokens = len(json.dumps([[prompt, []]]).encode()) + len(b"[]")
    cost = (price[0] * input_tokens + price[1] * max_tokens) / MTOK
    return cost, input_tokens + max_tokens


def echo_cost(prompt: str) -> Decimal:
    """What an echo call of ``prompt`` costs: about four characters a token, $1 in, $2 out."""
    tokens_in, tokens_out = -(-len(prompt) // 4), -(-len(f"echo: {prompt}") // 4)
    return (tokens_in + 2 * tokens_out) / MTOK


HELLO_ESTIMATE, HELLO_TOKENS = estimate("Hello Ada")  # $0.008213, 4117 tokens
HELLO_ESTIMATE_TEXT = "0.008213"


def one_step(project, slug: str = "wf", **extra):
    return make_workflow(project, agent_step("a", **extra), slug=slug)


def tool_workflow(project, slug: str = "calc", tool_slug: str = "calc"):
    return make_workflow(project, tool_step("t", "6*7", tool_slug=tool_slug), slug=slug, schema={})


def gate_workflow(project, slug: str = "gated"):
    return make_workflow(project, approval_step("gate"), slug=slug, schema={})


def make_policy(project, kind: str, config: dict, action: str = BLOCK, name: str = "Guard", **fields) -> Policy:
    return PolicyFactory(project=project, kind=kind, config=config, action=action, name=name, **fields)


def reload(run: Run) -> Run:
    run.refresh_from_db()
    return run


def decisions(**filters) -> list[tuple]:
    rows = PolicyDecision.objects.filter(**filters).order_by("id")
    return list(rows.values_list("policy__name", "stage", "outcome", "step__key"))


def decision_events(run: Run) -> list[dict]:
    return [event.payload for event in events(run, EventType.POLICY_DECISION)]


def ledger(run: Run) -> list[tuple]:
    rows = SpendEntry.objects.filter(run=run).order_by("id")
    return list(rows.values_list("status", "reserved_usd", "cost_usd"))


def api_run(team, run: Run) -> dict:
    response = team.client(Role.VIEWER).get(f"/api/v1/runs/{run.pk}")
    assert response.status_code == 200
    return response.json()


def api_steps(team, run: Run) -> dict[str, dict]:
    response = team.client(Role.VIEWER).get(f"/api/v1/runs/{run.pk}/steps")
    assert response.status_code == 200
    return {step["key"]: step for step in response.json()}


def decide(team, run: Run, key: str, verb: str = "approve", who: str = Role.ADMIN, comment: str = "ok"):
    return team.client(who).post(f"/api/v1/runs/{run.pk}/steps/{key}/{verb}", {"comment": comment}, format="json")


def assert_blocked(team, run: Run, key: str, policy: Policy, reason: str) -> None:
    """The run failed at ``key`` for ``reason``, recorded and shown to the caller."""
    run = reload(run)
    error = {"type": "PolicyBlocked", "message": reason, "permanent": True}
    assert (run.status, step_of(run, key).status) == (RunStatus.FAILED, StepStatus.FAILED)
    assert step_of(run, key).error == error
    assert run.error == {"step": key, **error}
    assert decisions(run=run) == [(policy.name, Stage.CALL, Outcome.BLOCKED, key)]
    assert decision_events(run) == [
        {"key": key, "policy": policy.pk, "stage": Stage.CALL, "outcome": Outcome.BLOCKED, "reason": reason}
    ]
    assert policy.name in reason
    assert api_run(team, run)["error"]["message"] == reason
    assert api_steps(team, run)[key]["error"]["message"] == reason


def assert_parked(team, run: Run, key: str, policy: Policy | None, reason: str, role: str = Role.ADMIN) -> None:
    """The step waits for a human, and says who and why."""
    run = reload(run)
    stored = step_of(run, key).hold
    hold = {
        "round": 1,
        "key": stored["key"],
        "policy": policy.pk if policy else None,
        "policy_name": policy.name if policy else "",
        "reason": reason,
        "role": role,
        "staff_only": False,
        "granted": [],
        **({"arguments": stored["arguments"]} if "arguments" in stored else {}),
    }
    assert stored["key"].startswith(f"{policy.pk if policy else 'tool-flag'}:")
    assert (run.status, step_of(run, key).status) == (RunStatus.WAITING_APPROVAL, StepStatus.WAITING_APPROVAL)
    assert stored == hold
    (waiting,) = events(run, EventType.STEP_WAITING_APPROVAL)
    assert waiting.payload == {"key": key, **hold}
    assert event_types(run)[-1] == EventType.RUN_WAITING_APPROVAL
    assert decisions(run=run) == [(policy.name if policy else None, Stage.CALL, Outcome.APPROVAL_REQUIRED, key)]
    assert api_steps(team, run)[key]["hold"] == hold
    assert api_run(team, run)["steps"][0]["hold"]["reason"] == reason


def assert_approved_and_finished(team, run: Run, key: str, policy: Policy | None, who: str = Role.ADMIN) -> None:
    response = decide(team, run, key, who=who)

    assert response.status_code == 200, response.json()
    run = reload(run)
    assert run.status == RunStatus.SUCCEEDED
    assert step_of(run, key).status == StepStatus.SUCCEEDED
    assert step_of(run, key).attempt == 1  # the parked attempt does not count
    name = policy.name if policy else None
    assert decisions(run=run) == [
        (name, Stage.CALL, Outcome.APPROVAL_REQUIRED, key),
        (name, Stage.CALL, Outcome.OVERRIDDEN, key),
    ]
    assert [p["outcome"] for p in decision_events(run)] == [Outcome.APPROVAL_REQUIRED, Outcome.OVERRIDDEN]
    assert EventType.STEP_APPROVED in event_types(run)
    assert EventType.RUN_RESUMED in event_types(run)


def assert_rejected(team, run: Run, key: str) -> None:
    response = decide(team, run, key, verb="reject", comment="too risky")

    assert response.status_code == 200, response.json()
    run = reload(run)
    assert (run.status, step_of(run, key).status) == (RunStatus.FAILED, StepStatus.FAILED)
    assert step_of(run, key).error["type"] == "Rejected"
    assert run.error["message"].endswith(": too risky")


# ------------------------------------------------------------------------------
# Budget
# ------------------------------------------------------------------------------
def budget(project, amount: float, action: str = BLOCK, **config) -> Policy:
    return make_policy(project, PolicyKind.BUDGET, {"amount_usd": amount, "window": "day", **config}, action, "Daily")


def budget_reason(amount, used: str = "0.00") -> str:
    end = budget_status(Policy.objects.get(name="Daily"), None).window_end
    return (
        f"Budget 'Daily': ${used} of ${amount} used or reserved until {end:%Y-%m-%d %H:%M} UTC; "
        f"this call may cost ${HELLO_ESTIMATE_TEXT}."
    )


def test_budget_allows_a_call_that_fits_and_settles_its_reservation_to_the_actual_cost(team, project):
    budget(project, 1)

    run = reload(start(one_step(project)))

    assert run.status == RunStatus.SUCCEEDED
    assert ledger(run) == [(EntryStatus.SETTLED, HELLO_ESTIMATE, echo_cost("Hello Ada"))]
    entry = SpendEntry.objects.get(run=run)
    assert (entry.step.key, entry.attempt, entry.agent.slug, entry.provider, entry.model) == (
        "a",
        1,
        "writer",
        "echo",
        "echo-1",
    )
    assert (entry.input_tokens, entry.output_tokens) == (3, 4)  # actual, not the estimate
    assert entry.price == echo_price()
    assert entry.settled_at is not None
    assert decisions() == []
    assert decision_events(run) == []


def test_budget_blocks_a_call_that_does_not_fit(team, project):
    daily = budget(project, 0.005)

    run = start(one_step(project))

    assert_blocked(team, run, "a", daily, budget_reason(0.005))
    assert ledger(run) == []


def test_budget_warns_and_lets_the_call_through(team, project):
    budget(project, 0.005, action=WARN)

    run = reload(start(one_step(project)))

    assert run.status == RunStatus.SUCCEEDED
    assert decisions(run=run) == [("Daily", Stage.CALL, Outcome.WARNED, "a")]
    (payload,) = decision_events(run)
    assert (payload["outcome"], payload["reason"]) == (Outcome.WARNED, budget_reason(0.005))
    assert ledger(run) == [(EntryStatus.SETTLED, HELLO_ESTIMATE, echo_cost("Hello Ada"))]


def test_budget_asks_for_approval_then_the_approved_step_runs(team, project):
    daily = budget(project, 0.005, action=ASK)
    run = start(one_step(project))
    assert_parked(team, run, "a", daily, budget_reason(0.005))
    assert ledger(run) == []

    assert_approved_and_finished(team, run, "a", daily)
    assert ledger(run) == [(EntryStatus.SETTLED, HELLO_ESTIMATE, echo_cost("Hello Ada"))]


def test_budget_approval_needs_the_role_the_policy_names(team, project):
    budget(project, 0.005, action=ASK)
    run = start(one_step(project))

    response = decide(team, run, "a", who=Role.DEVELOPER)

    assert response.status_code == 403
    assert "admin" in response.json()["message"]
    assert step_of(run, "a").status == StepStatus.WAITING_APPROVAL


def test_budget_approval_rejected_fails_the_run(team, project):
    budget(project, 0.005, action=ASK)
    run = start(one_step(project))

    assert_rejected(team, run, "a")
    assert ledger(run) == []


def test_a_budget_narrowed_to_another_agent_does_not_block(team, project):
    budget(project, 0.005, agent="helper")

    run = reload(start(one_step(project)))

    assert run.status == RunStatus.SUCCEEDED
    assert decisions() == []
    assert ledger(run) == [(EntryStatus.SETTLED, USD(0), echo_cost("Hello Ada"))]  # settled at once: no reservation


def test_an_unpriced_model_under_a_budget_is_blocked(team, project):
    daily = budget(project, 100)
    ModelPrice.objects.all().delete()

    run = start(one_step(project))

    assert_blocked(team, run, "a", daily, "Model echo/echo-1 has no price; 'Daily' cannot be kept.")


def test_each_provider_call_gets_its_own_reserved_then_settled_entry(team, project):
    budget(project, 1)
    workflow = make_workflow(project, agent_step("a", agent="helper", prompt='[[tool:calc {"expression": "6*7"}]]'))

    run = reload(start(workflow))

    assert run.status == RunStatus.SUCCEEDED
    entries = list(SpendEntry.objects.filter(run=run).order_by("id"))
    assert len(entries) == 2  # the call asking for the tool, and the one answering
    assert {e.status for e in entries} == {EntryStatus.SETTLED}
    assert entries[1].reserved_usd > entries[0].reserved_usd  # the second prompt carries the tool result
    assert sum(e.cost_usd for e in entries) == run.cost_usd


# ------------------------------------------------------------------------------
# Budget at admission
# ------------------------------------------------------------------------------
def test_an_exhausted_budget_refuses_a_run_with_422_naming_the_policy(team, project):
    daily = budget(project, 0.01)
    SpendEntryFactory(project=project, cost_usd=USD("0.01"))
    workflow = one_step(project)

    response = team.client(Role.DEVELOPER).post(
        "/api/v1/runs", {"workflow": str(workflow.pk), "inputs": {"name": "Ada"}}, format="json"
    )

    assert response.status_code == 422
    body = response.json()
    end = budget_status(daily, project.pk).window_end
    reason = f"Budget 'Daily' is exhausted: $0.01 of $0.01 used until {end:%Y-%m-%d %H:%M} UTC."
    assert body["code"] == "policy_refused"
    assert body["message"] == reason
    assert body["errors"] == {"policy": [reason]}
    assert body["policy"] == {"id": daily.pk, "name": "Daily", "kind": "budget", "action": "block"}
    assert not Run.objects.exists()
    assert decisions() == [("Daily", Stage.ADMISSION, Outcome.BLOCKED, None)]


def test_an_exhausted_budget_narrowed_to_an_agent_does_not_refuse_the_run(team, project):
    budget(project, 0.01, agent="helper")
    SpendEntryFactory(project=project, cost_usd=USD("0.01"))

    run = reload(start(one_step(project)))

    assert run.status == RunStatus.SUCCEEDED


def test_an_exhausted_warning_budget_starts_the_run_and_records_the_warning(team, project):
    budget(project, 0.01, action=WARN)
    SpendEntryFactory(project=project, cost_usd=USD("0.01"))

    run = reload(start(one_step(project)))

    assert run.status == RunStatus.SUCCEEDED
    assert decisions(run=run) == [
        ("Daily", Stage.ADMISSION, Outcome.WARNED, None),
        ("Daily", Stage.CALL, Outcome.WARNED, "a"),
    ]
    assert decision_events(run)[0]["stage"] == Stage.ADMISSION


# ------------------------------------------------------------------------------
# Run ceiling
# ------------------------------------------------------------------------------
def two_steps(project):
    return make_workflow(project, agent_step("a"), agent_step("b", prompt="Hello Bob", depends_on=["a"]))


def test_run_ceiling_allows_a_run_within_it(team, project):
    make_policy(project, PolicyKind.RUN_CEILING, {"max_usd": 1, "max_tokens": 100_000})

    run = reload(start(two_steps(project)))

    assert run.status == RunStatus.SUCCEEDED
    assert [status for status, _, _ in ledger(run)] == [EntryStatus.SETTLED, EntryStatus.SETTLED]
    assert decisions() == []


def test_run_ceiling_blocks_the_call_that_would_cross_it(team, project):
    # a reserves $0.008213 (fits under $0.00822) and settles at $0.000011; b may cost $0.008213 more.
    ceiling = make_policy(project, PolicyKind.RUN_CEILING, {"max_usd": 0.00822})

    run = start(two_steps(project))

    assert statuses(run)["a"] == StepStatus.SUCCEEDED
    reason = f"Run ceiling 'Guard': the run has used $0.000011 of $0.00822; this call may cost ${HELLO_ESTIMATE_TEXT}."
    assert_blocked(team, run, "b", ceiling, reason)
    assert ledger(run) == [(EntryStatus.SETTLED, HELLO_ESTIMATE, echo_cost("Hello Ada"))]


def test_run_ceiling_by_tokens_counts_what_the_run_used(team, project):
    # a may use 4117 tokens and uses 7; b may use 4117 more: 4124 > 4120.
    ceiling = make_policy(project, PolicyKind.RUN_CEILING, {"max_tokens": 4120})
    _, b_tokens = estimate("Hello Bob")

    run = start(two_steps(project))

    assert statuses(run)["a"] == StepStatus.SUCCEEDED
    reason = f"Run ceiling 'Guard': the run has used 7 of 4120 tokens; this call may use {b_tokens}."
    assert_blocked(team, run, "b", ceiling, reason)
    assert ledger(run) == [(EntryStatus.SETTLED, HELLO_ESTIMATE, echo_cost("Hello Ada"))]


def test_run_ceiling_warns(team, project):
    make_policy(project, PolicyKind.RUN_CEILING, {"max_tokens": 10}, WARN)

    run = reload(start(one_step(project)))

    assert run.status == RunStatus.SUCCEEDED
    assert decisions(run=run) == [("Guard", Stage.CALL, Outcome.WARNED, "a")]
    reason = f"Run ceiling 'Guard': the run has used 0 of 10 tokens; this call may use {HELLO_TOKENS}."
    assert decision_events(run)[0]["reason"] == reason


def test_run_ceiling_asks_for_approval_then_the_approved_step_runs(team, project):
    ceiling = make_policy(project, PolicyKind.RUN_CEILING, {"max_tokens": 10}, ASK)
    run = start(one_step(project))
    reason = f"Run ceiling 'Guard': the run has used 0 of 10 tokens; this call may use {HELLO_TOKENS}."
    assert_parked(team, run, "a", ceiling, reason)

    assert_approved_and_finished(team, run, "a", ceiling)
    assert ledger(run) == [(EntryStatus.SETTLED, HELLO_ESTIMATE, echo_cost("Hello Ada"))]


# ------------------------------------------------------------------------------
# Rate limit (admission)
# ------------------------------------------------------------------------------
RUNS_URL = "/api/v1/runs"


def post_run(client, workflow):
    return client.post(RUNS_URL, {"workflow": str(workflow.pk), "inputs": {"name": "Ada"}}, format="json")


def test_rate_limit_allows_runs_up_to_the_limit(team, project):
    make_policy(project, PolicyKind.RATE_LIMIT, {"max_runs": 2, "per": "minute"})
    workflow = one_step(project)

    responses = [post_run(team.client(Role.DEVELOPER), workflow) for _ in range(2)]

    assert [r.status_code for r in responses] == [201, 201]
    assert decisions() == []


def test_rate_limit_refuses_with_429_retry_after_and_the_policy(team, project):
    limit = make_policy(project, PolicyKind.RATE_LIMIT, {"max_runs": 2, "per": "minute"}, name="Two a minute")
    workflow = one_step(project)
    t0 = datetime(2026, 6, 1, 12, tzinfo=UTC)

    with time_machine.travel(t0, tick=False) as clock:
        client = team.client(Role.DEVELOPER)  # a token issued in the travelled time
        assert post_run(client, workflow).status_code == 201
        clock.shift(10)
        assert post_run(client, workflow).status_code == 201
        clock.shift(10)
        response = post_run(client, workflow)

    assert response.status_code == 429
    assert response["Retry-After"] == "41"  # the first run leaves the minute 40s from now
    reason = "Rate limit 'Two a minute': the project started 2 runs in the last minute; the limit is 2."
    body = response.json()
    assert (body["code"], body["message"], body["errors"]) == ("policy_refused", reason, {"policy": [reason]})
    assert body["policy"] == {"id": limit.pk, "name": "Two a minute", "kind": "rate_limit", "action": "block"}
    assert Run.objects.count() == 2
    assert decisions() == [("Two a minute", Stage.ADMISSION, Outcome.BLOCKED, None)]


def test_rate_limit_counts_again_once_the_period_has_passed(team, project):
    make_policy(project, PolicyKind.RATE_LIMIT, {"max_runs": 1, "per": "minute"})
    workflow = one_step(project)

    with time_machine.travel(datetime(2026, 6, 1, 12, tzinfo=UTC), tick=False) as clock:
        client = team.client(Role.DEVELOPER)
        assert post_run(client, workflow).status_code == 201
        assert post_run(client, workflow).status_code == 429
        clock.shift(61)
        assert post_run(client, workflow).status_code == 201


def test_rate_limit_after_it_was_lowered_waits_for_enough_runs_to_age_out(team, project):
    limit = make_policy(project, PolicyKind.RATE_LIMIT, {"max_runs": 3, "per": "minute"})
    workflow = one_step(project)
    with time_machine.travel(datetime(2026, 6, 1, 12, tzinfo=UTC), tick=False) as clock:
        client = team.client(Role.DEVELOPER)
        for _ in range(3):
            assert post_run(client, workflow).status_code == 201
            clock.shift(10)
        Policy.objects.filter(pk=limit.pk).update(config={"max_runs": 1, "per": "minute"})
        response = post_run(client, workflow)

    # Runs at 0s, 10s and 20s; now is 30s. All three must leave the minute; the last does at 80s.
    assert response.status_code == 429
    assert response["Retry-After"] == "51"


def test_a_retry_is_admitted_like_a_new_run(team, project):
    workflow = one_step(project)
    first = start(workflow)
    Run.objects.filter(pk=first.pk).update(status=RunStatus.FAILED)
    make_policy(project, PolicyKind.RATE_LIMIT, {"max_runs": 1, "per": "hour"}, name="One an hour")

    response = team.client(Role.DEVELOPER).post(f"{RUNS_URL}/{first.pk}/retry", {}, format="json")

    assert response.status_code == 429
    assert response.json()["policy"]["name"] == "One an hour"
    assert Run.objects.count() == 1
    assert decisions() == [("One an hour", Stage.ADMISSION, Outcome.BLOCKED, None)]


def test_a_client_hammering_a_rate_limit_is_recorded_once_every_ten_seconds(team, project):
    make_policy(project, PolicyKind.RATE_LIMIT, {"max_runs": 1, "per": "hour"}, name="One an hour")
    workflow = one_step(project)
    with time_machine.travel(datetime(2026, 6, 1, 12, tzinfo=UTC), tick=False) as clock:
        client = team.client(Role.DEVELOPER)
        assert post_run(client, workflow).status_code == 201
        assert [post_run(client, workflow).status_code for _ in range(5)] == [429] * 5
        clock.shift(11)
        assert post_run(client, workflow).status_code == 429

    assert decisions() == [("One an hour", Stage.ADMISSION, Outcome.BLOCKED, None)] * 2


def test_rate_limit_warns_and_starts_the_run(team, project):
    make_policy(project, PolicyKind.RATE_LIMIT, {"max_runs": 1, "per": "hour"}, WARN)
    workflow = one_step(project)
    start(workflow)

    run = reload(start(workflow))

    assert run.status == RunStatus.SUCCEEDED
    reason = "Rate limit 'Guard': the project started 1 runs in the last hour; the limit is 1."
    assert decisions() == [("Guard", Stage.ADMISSION, Outcome.WARNED, None)]
    assert PolicyDecision.objects.get().run == run
    (payload,) = decision_events(run)
    assert (payload["policy_name"], payload["outcome"], payload["reason"]) == ("Guard", Outcome.WARNED, reason)


def test_rate_limit_per_api_key_counts_only_that_keys_runs(team, project):
    make_policy(project, PolicyKind.RATE_LIMIT, {"max_runs": 1, "per": "minute", "scope": "api_key"})
    workflow = one_step(project)
    developer = team.members[Role.DEVELOPER]
    key_a, key_b = (ApiKeyFactory(project=project, created_by=developer) for _ in range(2))
    client_a, client_b = (team.client(Role.DEVELOPER), team.client(Role.DEVELOPER))
    client_a.credentials(HTTP_AUTHORIZATION=f"Api-Key {key_a.raw}")
    client_b.credentials(HTTP_AUTHORIZATION=f"Api-Key {key_b.raw}")

    first_a = post_run(client_a, workflow)
    second_a = post_run(client_a, workflow)
    first_b = post_run(client_b, workflow)
    by_user = [post_run(team.client(Role.DEVELOPER), workflow) for _ in range(2)]  # no key: not counted

    assert (first_a.status_code, second_a.status_code, first_b.status_code) == (201, 429, 201)
    assert "this API key started 1 runs" in second_a.json()["message"]
    assert [r.status_code for r in by_user] == [201, 201]
    assert Run.objects.filter(api_key=key_a).count() == 1
    assert Run.objects.filter(api_key=key_b).count() == 1


# ------------------------------------------------------------------------------
# Concurrency
# ------------------------------------------------------------------------------
def one_at_a_time(project, action: str = BLOCK, **config) -> Policy:
    return make_policy(project, PolicyKind.CONCURRENCY, {"max_active": 1, **config}, action, "One at a time")


def test_concurrency_allows_runs_up_to_the_limit(team, project):
    make_policy(project, PolicyKind.CONCURRENCY, {"max_active": 2})
    workflow = gate_workflow(project)

    first, second = start(workflow, inputs={}), start(workflow, inputs={})

    assert (first.status, second.status) == (RunStatus.WAITING_APPROVAL, RunStatus.WAITING_APPROVAL)
    assert decisions() == []


def test_concurrency_holds_an_extra_run_queued_until_a_slot_frees(team, project):
    limit = one_at_a_time(project)
    workflow = gate_workflow(project)
    first = start(workflow, inputs={})
    second = start(workflow, inputs={})

    assert first.status == RunStatus.WAITING_APPROVAL
    assert (second.status, second.waiting_on) == (RunStatus.QUEUED, limit)
    assert statuses(second) == {"gate": StepStatus.PENDING}
    reason = "Concurrency limit 'One at a time': 1 of 1 runs active, 0 ahead in the queue."
    assert decisions(run=second) == [("One at a time", Stage.ADMISSION, Outcome.QUEUED, None)]
    (held,) = events(second, EventType.RUN_HELD)
    assert (held.payload["policy"], held.payload["outcome"], held.payload["reason"]) == (limit.pk, "queued", reason)
    assert api_run(team, second)["waiting_on"] == limit.pk

    assert decide(team, first, "gate").status_code == 200

    assert reload(first).status == RunStatus.SUCCEEDED
    second = reload(second)
    assert (second.status, second.waiting_on) == (RunStatus.WAITING_APPROVAL, None)
    assert len(events(second, EventType.RUN_HELD)) == 1  # held once, not once per try


def test_concurrency_frees_the_slot_when_the_active_run_is_rejected(team, project):
    one_at_a_time(project)
    workflow = gate_workflow(project)
    first, second = start(workflow, inputs={}), start(workflow, inputs={})

    assert decide(team, first, "gate", verb="reject").status_code == 200

    assert reload(first).status == RunStatus.FAILED
    assert reload(second).status == RunStatus.WAITING_APPROVAL


def test_concurrency_gives_a_freed_slot_to_the_highest_priority_first(team, project):
    one_at_a_time(project)
    workflow = gate_workflow(project)
    first = start(workflow, inputs={})
    low = start(workflow, inputs={}, priority=0)
    high = start(workflow, inputs={}, priority=5)
    assert (low.status, high.status) == (RunStatus.QUEUED, RunStatus.QUEUED)

    decide(team, first, "gate")

    assert reload(high).status == RunStatus.WAITING_APPROVAL
    assert reload(low).status == RunStatus.QUEUED
    decide(team, high, "gate")
    assert reload(low).status == RunStatus.WAITING_APPROVAL


def test_concurrency_by_workflow_does_not_hold_other_workflows(team, project):
    one_at_a_time(project, workflow="gated")
    first = start(gate_workflow(project), inputs={})

    other = start(gate_workflow(project, slug="other"), inputs={})

    assert (first.status, other.status) == (RunStatus.WAITING_APPROVAL, RunStatus.WAITING_APPROVAL)


def test_concurrency_warns_and_starts_the_extra_run(team, project):
    one_at_a_time(project, action=WARN)
    workflow = gate_workflow(project)
    start(workflow, inputs={})

    second = start(workflow, inputs={})

    assert second.status == RunStatus.WAITING_APPROVAL
    assert decisions(run=second) == [("One at a time", Stage.ADMISSION, Outcome.WARNED, None)]
    (payload,) = decision_events(second)
    assert payload["reason"] == "Concurrency limit 'One at a time': 1 of 1 runs active, 0 ahead in the queue."
    assert events(second, EventType.RUN_HELD) == []


def test_a_cancelled_held_run_ends_without_taking_a_slot(team, project):
    one_at_a_time(project)
    workflow = gate_workflow(project)
    first, second = start(workflow, inputs={}), start(workflow, inputs={})

    response = team.client(Role.DEVELOPER).post(f"/api/v1/runs/{second.pk}/cancel")

    assert response.status_code == 200
    assert reload(second).status == RunStatus.CANCELLED
    assert reload(first).status == RunStatus.WAITING_APPROVAL


# ------------------------------------------------------------------------------
# Model allow-list
# ------------------------------------------------------------------------------
def models_policy(project, models, action=BLOCK):
    return make_policy(project, PolicyKind.MODEL_ALLOWLIST, {"models": models}, action, "Models")


def test_model_allowlist_allows_a_listed_model(team, project):
    models_policy(project, ["echo/*"])

    assert reload(start(one_step(project))).status == RunStatus.SUCCEEDED
    assert decisions() == []


def test_model_allowlist_blocks_an_unlisted_model(team, project):
    models = models_policy(project, ["openai/*"])

    run = start(one_step(project))

    assert_blocked(team, run, "a", models, "Model echo/echo-1 is not on the allow-list of 'Models'.")
    assert ledger(run) == []


def test_model_allowlist_warns(team, project):
    models_policy(project, ["openai/*"], WARN)

    run = reload(start(one_step(project)))

    assert run.status == RunStatus.SUCCEEDED
    assert decisions(run=run) == [("Models", Stage.CALL, Outcome.WARNED, "a")]


def test_model_allowlist_asks_for_approval_then_the_approved_step_runs(team, project):
    models = models_policy(project, ["openai/*"], ASK)
    run = start(one_step(project))
    assert_parked(team, run, "a", models, "Model echo/echo-1 is not on the allow-list of 'Models'.")

    assert_approved_and_finished(team, run, "a", models)


# ------------------------------------------------------------------------------
# Tool allow-list
# ------------------------------------------------------------------------------
def tools_policy(project, tools, action=BLOCK):
    return make_policy(project, PolicyKind.TOOL_ALLOWLIST, {"tools": tools}, action, "Tools")


def test_tool_allowlist_allows_a_listed_tool(team, project):
    tools_policy(project, ["ca*"])

    run = reload(start(tool_workflow(project), inputs={}))

    assert run.status == RunStatus.SUCCEEDED
    assert step_of(run, "t").output == 42


def test_tool_allowlist_blocks_an_unlisted_tool_step(team, project):
    tools = tools_policy(project, ["search"])

    run = start(tool_workflow(project), inputs={})

    assert_blocked(team, run, "t", tools, "Tool 'calc' is not on the allow-list of 'Tools'.")
    assert events(run, EventType.TOOL_CALL) == []


def test_tool_allowlist_in_an_agents_tool_loop_tells_the_model_and_the_step_goes_on(team, project):
    tools_policy(project, ["search"])
    workflow = make_workflow(project, agent_step("a", agent="helper", prompt='[[tool:calc {"expression": "6*7"}]]'))

    run = reload(start(workflow))

    assert run.status == RunStatus.SUCCEEDED
    assert "is not on the allow-list of 'Tools'" in run.outputs["a"]
    assert events(run, EventType.TOOL_CALL) == []
    assert decisions(run=run) == [("Tools", Stage.CALL, Outcome.BLOCKED, "a")]


def test_tool_allowlist_warns(team, project):
    tools_policy(project, ["search"], WARN)

    run = reload(start(tool_workflow(project), inputs={}))

    assert run.status == RunStatus.SUCCEEDED
    assert decisions(run=run) == [("Tools", Stage.CALL, Outcome.WARNED, "t")]


def test_tool_allowlist_asks_for_approval_then_the_approved_step_runs(team, project):
    tools = tools_policy(project, ["search"], ASK)
    run = start(tool_workflow(project), inputs={})
    assert_parked(team, run, "t", tools, "Tool 'calc' is not on the allow-list of 'Tools'.")
    assert events(run, EventType.TOOL_CALL) == []

    assert_approved_and_finished(team, run, "t", tools)
    assert step_of(run, "t").output == 42


# ------------------------------------------------------------------------------
# Approval rules and a tool's own flag
# ------------------------------------------------------------------------------
def risky(project, action=ASK, **config):
    return make_policy(project, PolicyKind.APPROVAL, config or {"risk_class": "destructive"}, action, "Risky")


@pytest.fixture
def wipe(project):
    return tool(project, "wipe", risk_class="destructive")


def test_approval_rule_lets_a_tool_below_its_risk_class_run(team, project):
    risky(project)

    run = reload(start(tool_workflow(project), inputs={}))  # calc only reads

    assert run.status == RunStatus.SUCCEEDED
    assert decisions() == []


def test_approval_rule_names_tools_by_glob(team, project):
    tool(project, "deploy_prod")
    rule = risky(project, action=BLOCK, tools=["deploy_*"])

    run = start(tool_workflow(project, tool_slug="deploy_prod"), inputs={})

    assert_blocked(team, run, "t", rule, "Tool 'deploy_prod' is named by 'Risky'.")


def test_approval_rule_blocks_a_covered_tool(team, project, wipe):
    rule = risky(project, action=BLOCK)

    run = start(tool_workflow(project, tool_slug="wipe"), inputs={})

    assert_blocked(team, run, "t", rule, "Tool 'wipe' is destructive; 'Risky' covers destructive and above.")


def test_approval_rule_warns(team, project, wipe):
    risky(project, action=WARN)

    run = reload(start(tool_workflow(project, tool_slug="wipe"), inputs={}))

    assert run.status == RunStatus.SUCCEEDED
    assert decisions(run=run) == [("Risky", Stage.CALL, Outcome.WARNED, "t")]


def test_approval_rule_parks_a_covered_tool_for_the_role_it_names(team, project, wipe):
    rule = risky(project, risk_class="destructive", role="owner")
    run = start(tool_workflow(project, tool_slug="wipe"), inputs={})
    reason = "Tool 'wipe' is destructive; 'Risky' covers destructive and above."
    assert_parked(team, run, "t", rule, reason, role=Role.OWNER)

    assert decide(team, run, "t", who=Role.ADMIN).status_code == 403
    assert_approved_and_finished(team, run, "t", rule, who=Role.OWNER)


def test_a_tool_a_developer_makes_through_the_api_cannot_slip_under_an_admins_approval_rule(team, project):
    rule = risky(project, risk_class="write")
    body = {"project": str(project.pk), "name": "Sum", "slug": "sum", "kind": "builtin"}
    made = team.client(Role.DEVELOPER).post("/api/v1/tools", body | {"config": {"function": "arithmetic"}})
    assert made.status_code == 201, made.json()
    relabel = team.client(Role.DEVELOPER).patch(f"/api/v1/tools/{made.json()['id']}", {"risk_class": "read"})
    assert relabel.status_code == 403

    run = start(tool_workflow(project, tool_slug="sum"), inputs={})

    assert_parked(team, run, "t", rule, "Tool 'sum' is spends_money; 'Risky' covers write and above.")
    assert events(run, EventType.TOOL_CALL) == []


def test_approval_rule_rejected_fails_the_run(team, project, wipe):
    risky(project)
    run = start(tool_workflow(project, tool_slug="wipe"), inputs={})

    assert_rejected(team, run, "t")
    assert events(run, EventType.TOOL_CALL) == []


def test_approval_rule_by_cost_parks_an_expensive_agent_call(team, project):
    rule = risky(project, min_cost_usd=0.005)
    run = start(one_step(project))

    reason = f"The call may cost up to ${HELLO_ESTIMATE_TEXT}; 'Risky' asks from $0.005."
    assert_parked(team, run, "a", rule, reason)
    assert_approved_and_finished(team, run, "a", rule)


def test_a_tool_that_requires_approval_parks_the_step_without_any_policy(team, project):
    tool(project, "deploy", requires_approval=True)
    run = start(tool_workflow(project, tool_slug="deploy"), inputs={})

    assert_parked(team, run, "t", None, "Tool 'deploy' requires approval for every call.")
    assert_approved_and_finished(team, run, "t", None)


def test_an_agent_calling_a_tool_that_requires_approval_parks_and_reruns_the_step_once_approved(team, project):
    deploy = tool(project, "deploy", requires_approval=True)
    echo_agent(project, "shipper", [deploy])
    budget(project, 1)
    workflow = make_workflow(project, agent_step("a", agent="shipper", prompt='[[tool:deploy {"expression": "1+1"}]]'))
    run = start(workflow)
    assert_parked(team, run, "a", None, "Tool 'deploy' requires approval for every call.")
    assert len(ledger(run)) == 1  # the call that asked for the tool was made, and is paid for

    assert_approved_and_finished(team, run, "a", None)

    run = reload(run)
    assert "tool results" in run.outputs["a"]
    # The step ran again from its start: its first call is made (and paid for) twice.
    assert [status for status, _, _ in ledger(run)] == [EntryStatus.SETTLED] * 3
    assert len(events(run, EventType.TOOL_CALL)) == 1


# ------------------------------------------------------------------------------
# The ledger when calls fail, and the reaper
# ------------------------------------------------------------------------------
def test_a_failed_provider_call_releases_its_reservation(team, project, fake_openai):
    budget(project, 1)
    ModelPrice.objects.create(
        provider="openai",
        model="local-model",
        input_usd_per_mtok=1,
        output_usd_per_mtok=2,
        effective_from=datetime(2025, 1, 1, tzinfo=UTC),
    )
    openai_agent(project, fake_openai.base_url)
    prompt = "FAIL_ONCE=first Hello"
    workflow = make_workflow(project, agent_step("a", agent="remote", prompt=prompt, retry={"backoff_seconds": 0}))

    run = reload(start(workflow))

    assert run.status == RunStatus.SUCCEEDED
    assert step_of(run, "a").attempt == 2
    reserved, _ = estimate(prompt)
    failed, answered = SpendEntry.objects.filter(run=run).order_by("id")
    assert (failed.attempt, failed.status, failed.reserved_usd, failed.cost_usd) == (
        1,
        EntryStatus.SETTLED,
        reserved,
        USD(0),
    )
    assert (failed.input_tokens, failed.output_tokens) == (0, 0)
    assert (answered.attempt, answered.status, answered.reserved_usd) == (2, EntryStatus.SETTLED, reserved)
    assert (answered.input_tokens, answered.output_tokens, answered.cost_usd) == (100, 20, USD("0.00014"))
    status = budget_status(Policy.objects.get(name="Daily"), project.pk)
    assert (status.spent, status.reserved) == (USD("0.00014"), USD(0))


def reservation(run: Run, key: str, attempt: int = 1, estimate_usd: str = "0.50") -> SpendEntry:
    step = step_of(run, key)
    return SpendEntryFactory(
        project=run.project,
        run=run,
        step=step,
        attempt=attempt,
        status=EntryStatus.RESERVED,
        reserved_usd=USD(estimate_usd),
        cost_usd=None,
    )


def test_the_reaper_expires_an_orphaned_reservation_and_a_late_settle_still_settles_it(team, project):
    daily = budget(project, 1)
    done = reload(start(one_step(project)))
    live = bare_run(one_step(project, slug="live"), status=RunStatus.RUNNING)
    RunStep.objects.filter(run=live).update(
        status=StepStatus.RUNNING, attempt=2, lease_expires_at=timezone.now() + timedelta(minutes=5)
    )
    orphan = reservation(done, "a")  # its step finished: its worker is gone
    in_flight = reservation(live, "a", attempt=2)  # its attempt is still running
    stale_attempt = reservation(live, "a", attempt=1)  # an earlier attempt of a running step
    fresh = reservation(done, "a")
    stepless = SpendEntryFactory(project=project, status=EntryStatus.RESERVED, reserved_usd=USD("0.50"), cost_usd=None)
    SpendEntry.objects.filter(pk__in=[orphan.pk, in_flight.pk, stale_attempt.pk, stepless.pk]).update(
        created_at=timezone.now() - timedelta(seconds=31)
    )

    counts = core.reap()

    assert counts["reservations"] == 3
    status_of = dict(SpendEntry.objects.values_list("pk", "status"))
    assert status_of[orphan.pk] == status_of[stale_attempt.pk] == status_of[stepless.pk] == EntryStatus.EXPIRED
    assert status_of[in_flight.pk] == status_of[fresh.pk] == EntryStatus.RESERVED
    # Expired, the estimate stays counted: the provider may have billed the call.
    spent = SpendEntry.objects.filter(run=done, status=EntryStatus.SETTLED).get().cost_usd
    assert budget_status(daily, project.pk).reserved == USD("2.50")
    assert budget_status(daily, project.pk).spent == spent

    late = Call(project_id=project.pk, run_id=done.pk, step_id=step_of(done, "a").pk, attempt=1)
    spend_settle(call=late, entry_id=orphan.pk, input_tokens=10, output_tokens=10, cost=USD("0.03"), price=None)

    orphan.refresh_from_db()
    assert (orphan.status, orphan.cost_usd, orphan.settled_at is not None) == (EntryStatus.SETTLED, USD("0.03"), True)
    assert SpendEntry.objects.count() == 6  # settled in place, not written again
    assert core.reap()["reservations"] == 0


def test_the_reaper_expires_a_reservation_older_than_30s_with_time_travel(team, project):
    done = reload(start(one_step(project)))
    entry = reservation(done, "a")

    with time_machine.travel(timezone.now() + timedelta(seconds=20), tick=False):
        assert core.reap()["reservations"] == 0
    with time_machine.travel(timezone.now() + timedelta(seconds=31), tick=False):
        assert core.reap()["reservations"] == 1

    entry.refresh_from_db()
    assert entry.status == EntryStatus.EXPIRED


# ------------------------------------------------------------------------------
# What an approval covers, and who may give it
# ------------------------------------------------------------------------------
def test_approving_a_budget_overrun_does_not_approve_a_risky_tool_in_the_same_step(team, project):
    deploy = tool(project, "deploy", requires_approval=True)
    echo_agent(project, "shipper", [deploy])
    make_policy(project, PolicyKind.RUN_CEILING, {"max_tokens": 10}, ASK, name="Small")
    workflow = make_workflow(project, agent_step("a", agent="shipper", prompt='[[tool:deploy {"expression": "1+1"}]]'))
    run = start(workflow)
    first_hold = step_of(reload(run), "a").hold
    assert (first_hold["round"], first_hold["policy_name"]) == (1, "Small")

    assert decide(team, run, "a").status_code == 200

    # The re-run passes the ceiling, then asks again, this time about the tool, with its arguments.
    run = reload(run)
    second_hold = step_of(run, "a").hold
    assert run.status == RunStatus.WAITING_APPROVAL
    assert (second_hold["round"], second_hold["key"]) == (2, "tool-flag:tool:deploy")
    assert second_hold["arguments"] == {"expression": "1+1"}
    assert second_hold["granted"] == [first_hold["key"]]
    assert len(events(run, EventType.TOOL_CALL)) == 0

    assert decide(team, run, "a").status_code == 200
    run = reload(run)
    assert run.status == RunStatus.SUCCEEDED
    assert len(events(run, EventType.TOOL_CALL)) == 1
    assert list(run.steps.get(key="a").approvals.values_list("round", flat=True).order_by("round")) == [1, 2]


def test_a_hold_by_a_global_policy_is_decided_by_staff_only(team, project):
    PolicyFactory(project=None, kind=PolicyKind.RUN_CEILING, config={"max_tokens": 10}, action=ASK, name="Global")
    run = start(one_step(project))
    assert step_of(reload(run), "a").hold["staff_only"] is True

    response = decide(team, run, "a", who=Role.OWNER)
    assert response.status_code == 403
    assert reload(run).status == RunStatus.WAITING_APPROVAL

    owner = team.members[Role.OWNER]
    owner.is_staff = True
    owner.save(update_fields=["is_staff"])
    assert decide(team, run, "a", who=Role.OWNER).status_code == 200
    assert reload(run).status == RunStatus.SUCCEEDED


# ------------------------------------------------------------------------------
# Concurrency: every limit counts, and only for its own queue
# ------------------------------------------------------------------------------
def test_a_warning_concurrency_limit_does_not_hide_a_blocking_one(team, project):
    make_policy(project, PolicyKind.CONCURRENCY, {"max_active": 1}, WARN, name="Soft", priority=10)
    hard = make_policy(project, PolicyKind.CONCURRENCY, {"max_active": 2}, BLOCK, name="Hard")
    workflow = gate_workflow(project)

    runs = [start(workflow, inputs={}) for _ in range(3)]

    assert [reload(r).status for r in runs] == [RunStatus.WAITING_APPROVAL] * 2 + [RunStatus.QUEUED]
    assert reload(runs[2]).waiting_on == hard
    assert [name for name, _, outcome, _ in decisions(run=runs[1]) if outcome == Outcome.WARNED] == ["Soft"]


def test_runs_held_by_another_limit_do_not_count_as_ahead_in_the_queue(team, project):
    make_policy(project, PolicyKind.CONCURRENCY, {"max_active": 1, "workflow": "narrow"}, name="Narrow")
    make_policy(project, PolicyKind.CONCURRENCY, {"max_active": 3}, name="Project")
    narrow = gate_workflow(project, slug="narrow")
    wide = gate_workflow(project, slug="wide")

    narrow_runs = [start(narrow, inputs={}) for _ in range(3)]  # one active, two held by Narrow
    other = start(wide, inputs={})

    assert [reload(r).status for r in narrow_runs] == [RunStatus.WAITING_APPROVAL] + [RunStatus.QUEUED] * 2
    assert reload(other).status == RunStatus.WAITING_APPROVAL  # 1 of 3 active: Narrow's queue is not its own


# ------------------------------------------------------------------------------
# A call cannot outgrow its reservation
# ------------------------------------------------------------------------------
def test_under_a_budget_an_agent_without_max_tokens_is_sent_the_cap_its_estimate_assumed(team, project, fake_openai):
    ModelPrice.objects.create(
        provider="openai",
        model="local-model",
        input_usd_per_mtok=1,
        output_usd_per_mtok=2,
        effective_from=datetime(2025, 1, 1, tzinfo=UTC),
    )
    openai_agent(project, fake_openai.base_url, slug="capped")
    openai_agent(project, fake_openai.base_url, slug="own", parameters={"max_tokens": 50})
    budget(project, 1)

    start(make_workflow(project, agent_step("a", agent="capped"), slug="capped"))
    start(make_workflow(project, agent_step("a", agent="own"), slug="own"))

    assert [body.get("max_tokens") for body in fake_openai.bodies] == [DEFAULT_OUTPUT, 50]
