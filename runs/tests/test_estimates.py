"""Estimates: the worst case bounds what runs really cost, the expected figures follow history,
unpriced models are named, limits and admission are judged as a real start would, and an
estimate or a dry run writes nothing."""

from decimal import Decimal

import pytest
from django.utils import timezone

from agents.models import Agent, ModelPrice
from policies.models import PolicyDecision, SpendEntry
from policies.tests.factories import PolicyFactory, SpendEntryFactory
from runs import estimates
from runs.choices import RunStatus
from runs.models import Run, RunEvent, RunStep
from schedules.freeze import project_freeze
from sparkops.roles import Role

from .factories import (
    EXPR_SCHEMA,
    agent_step,
    echo_agent,
    make_catalog,
    make_workflow,
    start,
    tool_step,
)

#: Expected cost may differ from the history's median by at most this share (stated in README).
TOLERANCE = Decimal("0.01")


@pytest.fixture
def catalog(team):
    return make_catalog(team.project)


def estimate_of(workflow, inputs: dict) -> dict:
    return estimates.estimate_start(workflow=workflow, inputs=inputs)


def chain(catalog):
    """An agent, a tool-calling agent reading it, and an agent reading both."""
    return make_workflow(
        catalog.project,
        agent_step("a", prompt="Summarize {{ inputs.expr }} in one line."),
        agent_step(
            "b",
            agent="helper",
            prompt='[[tool:calc {"expression": "{{ inputs.expr }}"}]] then {{ steps.a.output }}',
            depends_on=["a"],
        ),
        agent_step("c", prompt="Both: {{ steps.a.output }} / {{ steps.b.output }}", depends_on=["a", "b"]),
        schema=EXPR_SCHEMA,
    )


def test_an_echo_runs_actual_cost_never_exceeds_the_worst_case(engine, catalog):
    workflow = chain(catalog)
    for expr in ["1+1", "6*7*" + "9" * 50, "2**10", "ünïcödé ✓ " * 20]:
        estimate = estimate_of(workflow, {"expr": expr})
        run = start(workflow, {"expr": expr})
        run.refresh_from_db()

        assert run.status == RunStatus.SUCCEEDED
        assert run.cost_usd > 0
        assert run.cost_usd <= Decimal(estimate["worst_case"]["cost_usd"])
        assert run.input_tokens + run.output_tokens <= estimate["worst_case"]["tokens"]
        for step in estimate["steps"]:
            actual = RunStep.objects.get(run=run, key=step["key"])
            assert actual.cost_usd <= Decimal(step["worst_case"]["cost_usd"]), step["key"]
        # The helper may make every round its limit allows.
        rounds = catalog.helper.max_tool_iterations + 1
        assert {s["key"]: s["calls"] for s in estimate["steps"]} == {"a": 1, "b": rounds, "c": 1}


def test_the_worst_case_is_priced_with_the_price_in_force(catalog):
    workflow = make_workflow(catalog.project, agent_step("a", prompt="x" * 100), schema={})
    echo_agent(catalog.project, "capped", parameters={"max_tokens": 10})
    capped = make_workflow(catalog.project, agent_step("a", agent="capped", prompt="x" * 100), slug="capped", schema={})

    step = estimate_of(capped, {})["steps"][0]

    # 100 bytes of prompt, 16 of framing and "[]" of no tools: 118 in at $1, 10 out at $2 per million.
    assert step["worst_case"]["input_tokens"] == 116 + len(b"[]")
    assert step["worst_case"]["output_tokens"] == 10
    assert Decimal(step["worst_case"]["cost_usd"]) == Decimal("0.000138")
    uncapped = estimate_of(workflow, {})["steps"][0]
    assert uncapped["worst_case"]["output_tokens"] == 4096
    assert "sets no max_tokens" in uncapped["notes"][0]


def test_expected_tracks_the_history_of_this_version_within_the_tolerance(engine, catalog):
    workflow = chain(catalog)
    assert estimate_of(workflow, {"expr": "3*3"})["expected"] is None  # no history: the worst case alone

    runs = [start(workflow, {"expr": "3*3"}) for _ in range(5)]
    actual = sorted(Run.objects.get(pk=run.pk).cost_usd for run in runs)

    expected = estimate_of(workflow, {"expr": "3*3"})["expected"]
    median = actual[2]
    assert expected["history_runs"] == 5
    assert expected["basis"] == "history"
    assert abs(Decimal(expected["cost_usd_p50"]) - median) <= median * TOLERANCE
    assert Decimal(expected["cost_usd_p95"]) >= Decimal(expected["cost_usd_p50"])
    assert expected["duration_ms_p95"] >= expected["duration_ms_p50"] >= 0
    assert Decimal(expected["cost_usd_p50"]) < Decimal(estimate_of(workflow, {"expr": "3*3"})["worst_case"]["cost_usd"])


def test_an_unpriced_model_is_named_and_never_counted_as_zero(catalog):
    echo_agent(catalog.project, "mystery")
    Agent.objects.filter(slug="mystery").update(model="echo-unpriced")
    workflow = make_workflow(catalog.project, agent_step("a"), agent_step("b", agent="mystery"))

    estimate = estimate_of(workflow, {"name": "Ada"})

    assert estimate["worst_case"]["cost_usd"] is None
    assert estimate["worst_case"]["unpriced_models"] == ["echo/echo-unpriced"]
    assert Decimal(estimate["worst_case"]["priced_cost_usd"]) > 0
    b = estimate["steps"][1]
    assert (b["worst_case"]["cost_usd"], b["worst_case"]["unpriced"], b["price_id"]) == (None, True, None)
    assert "has no price" in b["notes"][0]


def test_it_names_the_budgets_and_ceilings_the_run_would_touch(catalog):
    workflow = make_workflow(catalog.project, agent_step("a"))
    budget = PolicyFactory(project=catalog.project, name="tiny", config={"amount_usd": 0.001, "window": "day"})
    other = PolicyFactory(
        project=catalog.project, name="other agent", config={"amount_usd": 5, "window": "day", "agent": "nobody"}
    )
    ceiling = PolicyFactory(project=catalog.project, kind="run_ceiling", name="cap", config={"max_tokens": 100})

    limits = {limit["policy"]: limit for limit in estimate_of(workflow, {"name": "Ada"})["limits"]}

    assert other.pk not in limits
    assert limits[budget.pk]["would_exceed_worst_case"] is True
    assert limits[budget.pk]["steps"] == ["a"]
    assert limits[budget.pk]["remaining_usd"] == "0.001000"
    assert limits[ceiling.pk]["would_exceed_tokens"] is True


def test_admission_is_asked_for_real_and_nothing_is_recorded(catalog):
    workflow = make_workflow(catalog.project, agent_step("a"))
    assert estimate_of(workflow, {"name": "Ada"})["admission"]["admitted"] is True
    budget = PolicyFactory(project=catalog.project, name="spent", config={"amount_usd": 0.5, "window": "day"})
    SpendEntryFactory(project=catalog.project, cost_usd=Decimal(1))

    verdict = estimate_of(workflow, {"name": "Ada"})["admission"]

    assert (verdict["admitted"], verdict["status_code"], verdict["policy"]["id"]) == (False, 422, budget.pk)
    assert "exhausted" in verdict["reason"]
    assert not PolicyDecision.objects.exists()


def test_a_frozen_project_is_estimated_as_refused_naming_the_freeze(catalog):
    workflow = make_workflow(catalog.project, agent_step("a"))
    project_freeze(project=catalog.project, reason="runaway spend")

    verdict = estimate_of(workflow, {"name": "Ada"})["admission"]

    assert (verdict["admitted"], verdict["status_code"]) == (False, 409)
    assert "runaway spend" in verdict["reason"]


def test_it_says_when_a_concurrency_limit_would_hold_the_run_in_the_queue(catalog):
    workflow = make_workflow(catalog.project, agent_step("a"))
    assert estimate_of(workflow, {"name": "Ada"})["admission"]["waits_for_slot"] is None
    limit = PolicyFactory(project=catalog.project, kind="concurrency", name="one", config={"max_active": 1})
    Run.objects.filter(pk=start(workflow).pk).update(status=RunStatus.RUNNING)

    verdict = estimate_of(workflow, {"name": "Ada"})["admission"]

    assert verdict["admitted"] is True
    assert verdict["waits_for_slot"]["policy"] == limit.pk
    assert "1 of 1 runs active" in verdict["waits_for_slot"]["reason"]
    assert not PolicyDecision.objects.exists()


def test_a_model_an_allow_list_blocks_is_noted_on_its_step(catalog):
    PolicyFactory(project=catalog.project, kind="model_allowlist", config={"models": ["openai/*"]})
    workflow = make_workflow(catalog.project, agent_step("a"))

    notes = estimate_of(workflow, {"name": "Ada"})["steps"][0]["notes"]

    assert any("not on the allow-list" in note and "(block)" in note for note in notes)


# ------------------------------------------------------------------------------
# The API
# ------------------------------------------------------------------------------
def counts() -> tuple[int, ...]:
    return tuple(model.objects.count() for model in (Run, RunStep, RunEvent, PolicyDecision, SpendEntry))


def test_a_dry_run_answers_the_estimate_and_verdict_and_writes_nothing(team, catalog):
    workflow = make_workflow(catalog.project, agent_step("a"), tool_step("n", "1+1"))
    PolicyFactory(project=catalog.project, name="warned", action="warn", config={"amount_usd": 0.0001, "window": "day"})
    SpendEntryFactory(project=catalog.project, cost_usd=Decimal(1))
    before = counts()

    response = team.client(Role.DEVELOPER).post(
        "/api/v1/runs", {"workflow": str(workflow.pk), "inputs": {"name": "Ada"}, "dry_run": True}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["dry_run"] is True
    assert body["admission"]["admitted"] is True
    assert "exhausted" in body["admission"]["warnings"][0]["reason"]
    assert [step["key"] for step in body["steps"]] == ["a", "n"]
    assert counts() == before


def test_a_dry_run_checks_inputs_as_a_start_does(team, catalog):
    workflow = make_workflow(catalog.project, agent_step("a"))

    response = team.client(Role.DEVELOPER).post(
        "/api/v1/runs", {"workflow": str(workflow.pk), "inputs": {}, "dry_run": True}, format="json"
    )

    assert response.status_code == 400
    assert "inputs" in response.json()["errors"]
    assert not Run.objects.exists()


def test_viewers_estimate_and_outsiders_do_not_see_the_workflow(team, catalog):
    workflow = make_workflow(catalog.project, agent_step("a"))
    body = {"workflow": str(workflow.pk), "inputs": {"name": "Ada"}}

    viewer = team.client(Role.VIEWER).post("/api/v1/runs/estimate", body, format="json")
    outsider = team.client("outsider").post("/api/v1/runs/estimate", body, format="json")

    assert viewer.status_code == 200
    assert Decimal(viewer.json()["worst_case"]["cost_usd"]) > 0
    assert outsider.status_code == 400
    assert "workflow" in outsider.json()["errors"]
    assert not Run.objects.exists()


def test_get_workflow_estimate_reads_inputs_and_version_from_the_query(team, catalog):
    workflow = make_workflow(catalog.project, agent_step("a"))
    client = team.client(Role.VIEWER)

    ok = client.get(f"/api/v1/workflows/{workflow.pk}/estimate", {"inputs": '{"name": "Ada"}', "version": 1})
    missing = client.get(f"/api/v1/workflows/{workflow.pk}/estimate")
    garbled = client.get(f"/api/v1/workflows/{workflow.pk}/estimate", {"inputs": "[1]"})
    no_version = client.get(f"/api/v1/workflows/{workflow.pk}/estimate", {"inputs": "{}", "version": "7"})

    assert ok.status_code == 200, ok.content
    assert ok.json()["version"] == 1
    assert missing.status_code == 400
    assert "inputs" in missing.json()["errors"]
    assert garbled.status_code == 400
    assert "inputs" in garbled.json()["errors"]
    assert no_version.status_code == 400
    assert "version" in no_version.json()["errors"]


def test_a_price_change_moves_the_worst_case(catalog):
    workflow = make_workflow(catalog.project, agent_step("a"))
    before = Decimal(estimate_of(workflow, {"name": "Ada"})["worst_case"]["cost_usd"])
    ModelPrice.objects.create(
        provider="echo", model="echo-1", input_usd_per_mtok=2, output_usd_per_mtok=4, effective_from=timezone.now()
    )

    after = Decimal(estimate_of(workflow, {"name": "Ada"})["worst_case"]["cost_usd"])
    assert abs(after - before * 2) <= Decimal("0.000002")  # each rounded up to the micro-dollar
