"""Replay from a step: exactly the steps that read an edited input (directly or through what they
depend on) run again, overrides run and price the model they name, the preview writes nothing."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from agents.models import ModelPrice
from policies.models import PolicyDecision, SpendEntry
from policies.tests.factories import PolicyFactory
from runs import replay
from runs.choices import EventType, RunStatus, Trigger
from runs.engine.transitions import TransitionRefused
from runs.models import Run, RunEvent, RunStep
from sparkops.roles import Role

from .factories import agent_step, echo_agent, events, llm_calls, make_catalog, make_workflow, start, step_of

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "topic": {"type": "string"}},
    "required": ["name", "topic"],
}


@pytest.fixture
def catalog(team):
    return make_catalog(team.project)


@pytest.fixture
def diamond(engine, catalog) -> Run:
    """greet reads name, intro reads topic; letter reads greet; summary reads letter and intro."""
    workflow = make_workflow(
        catalog.project,
        agent_step("greet", prompt="Hello {{ inputs.name }}"),
        agent_step("intro", prompt="About {{ inputs.topic }}"),
        agent_step("letter", prompt="Letter: {{ steps.greet.output }}", depends_on=["greet"]),
        agent_step("summary", prompt="{{ steps.letter.output }} / {{ steps.intro.output }}",
                   depends_on=["letter", "intro"]),
        agent_step("footer", prompt="Regards"),
        schema=SCHEMA,
    )  # fmt: skip
    run = start(workflow, {"name": "Ada", "topic": "tides"})
    assert run.status == RunStatus.SUCCEEDED
    return run


def reran(run: Run) -> set[str]:
    return set(RunStep.objects.filter(run=run, reused_from__isnull=True).values_list("key", flat=True))


def test_replay_with_an_edited_input_reruns_exactly_the_steps_that_read_it(diamond):
    made, created = replay.run_replay(run=diamond, inputs={"name": "Grace", "topic": "tides"})
    made.refresh_from_db()

    assert created
    assert made.status == RunStatus.SUCCEEDED
    assert (made.trigger, made.parent, made.from_step) == (Trigger.REPLAY, diamond, "")
    assert reran(made) == {"greet", "letter", "summary"}
    assert {key for key in ["greet", "letter", "summary", "intro", "footer"] if llm_calls(made, key)} == reran(made)
    assert made.outputs["letter"] == "echo: Letter: echo: Hello Grace"
    assert step_of(made, "intro").output == step_of(diamond, "intro").output
    assert step_of(made, "greet").plan_reason == "its input changed"
    assert step_of(made, "letter").plan_reason == "it depends on 'greet', which runs again"
    assert step_of(made, "summary").plan_reason == "it depends on 'letter', which runs again"
    assert step_of(made, "intro").plan_reason == "same input, and every step it depends on is reused"
    assert {e.step.key for e in events(made, EventType.STEP_REUSED)} == {"intro", "footer"}


def test_replay_from_a_step_reruns_it_and_what_depends_on_it(diamond):
    made, _ = replay.run_replay(run=diamond, from_step="intro")
    made.refresh_from_db()

    assert made.status == RunStatus.SUCCEEDED
    assert made.from_step == "intro"
    assert reran(made) == {"intro", "summary"}
    assert step_of(made, "intro").plan_reason == "replayed from 'intro'"
    assert step_of(made, "summary").plan_reason == "replayed from 'intro'"


def test_replay_with_a_model_override_uses_and_prices_that_model(diamond, catalog):
    price = ModelPrice.objects.create(
        provider="echo",
        model="echo-2",
        input_usd_per_mtok=Decimal(10),
        output_usd_per_mtok=Decimal(20),
        effective_from=datetime(2025, 1, 1, tzinfo=UTC),
    )

    preview = replay.replay_preview(run=diamond, overrides={"footer": {"model": "echo/echo-2"}})
    made, _ = replay.run_replay(run=diamond, overrides={"footer": {"model": "echo-2"}})
    made.refresh_from_db()

    assert [step["key"] for step in preview["estimate"]["steps"]] == ["footer"]
    assert preview["estimate"]["steps"][0]["price_id"] == price.pk
    assert made.overrides == {"footer": {"model": "echo-2"}}
    footer = step_of(made, "footer")
    assert (footer.model, footer.plan_reason) == ("echo-2", "its model is overridden")
    assert footer.cost_usd == price.cost(footer.input_tokens, footer.output_tokens).quantize(Decimal("0.000001"))
    assert footer.cost_usd > step_of(diamond, "footer").cost_usd
    call = events(made, EventType.LLM_CALL)[0]
    assert (call.payload["model"], call.payload["price_id"]) == ("echo-2", price.pk)
    assert SpendEntry.objects.get(run=made).model == "echo-2"
    assert reran(made) == {"footer"}
    assert catalog.writer.model == "echo-1"  # the agent itself keeps its model
    assert Decimal(preview["estimate"]["worst_case"]["cost_usd"]) >= footer.cost_usd


def test_replay_with_an_agent_override_runs_that_agent(diamond, catalog):
    echo_agent(catalog.project, "poet", system_prompt="Rhyme.")

    made, _ = replay.run_replay(run=diamond, overrides={"intro": {"agent": "poet"}})
    made.refresh_from_db()

    assert step_of(made, "intro").agent.slug == "poet"
    assert reran(made) == {"intro", "summary"}


def test_overrides_are_checked_against_the_version_the_project_and_the_policies(diamond, catalog):
    PolicyFactory(project=catalog.project, kind="model_allowlist", config={"models": ["echo/echo-1"]})
    cases = {
        "nope": {"model": "echo-1"},
        "greet": {"model": "echo-9"},
        "intro": {"agent": "ghost"},
        "footer": {"model": "openai/gpt-4o"},
    }

    with pytest.raises(ValidationError) as caught:
        replay.run_replay(run=diamond, overrides=cases)

    errors = dict(message.split(": ", 1) for message in caught.value.message_dict["overrides"])
    assert set(errors) == set(cases)
    assert "not an agent step" in errors["nope"]
    assert "not on the allow-list" in errors["greet"]
    assert "no active agent 'ghost'" in errors["intro"]
    assert "speaks echo" in errors["footer"]
    assert Run.objects.count() == 1


def test_a_run_still_active_is_not_replayed(engine, catalog):
    workflow = make_workflow(catalog.project, {"key": "gate", "kind": "approval", "message": "Go?"})
    run = start(workflow)
    assert run.status == RunStatus.WAITING_APPROVAL

    with pytest.raises(TransitionRefused):
        replay.run_replay(run=run)


# ------------------------------------------------------------------------------
# The API
# ------------------------------------------------------------------------------
def counts() -> tuple[int, ...]:
    return tuple(model.objects.count() for model in (Run, RunStep, RunEvent, PolicyDecision, SpendEntry))


def test_a_dry_run_replay_previews_and_writes_nothing(diamond, team):
    before = counts()

    response = team.client(Role.DEVELOPER).post(
        f"/api/v1/runs/{diamond.pk}/replay",
        {"inputs": {"name": "Grace", "topic": "tides"}, "dry_run": True},
        format="json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert {step["key"]: step["reuse"] for step in body["steps"]} == {
        "greet": False,
        "intro": True,
        "letter": False,
        "summary": False,
        "footer": True,
    }
    assert [step["key"] for step in body["estimate"]["steps"]] == ["greet", "letter", "summary"]
    assert body["estimate"]["admission"]["admitted"] is True
    assert counts() == before


def test_replay_through_the_api_records_parent_step_and_overrides(diamond, team):
    response = team.client(Role.DEVELOPER).post(
        f"/api/v1/runs/{diamond.pk}/replay",
        {"from_step": "letter", "overrides": {"summary": {"model": "echo-1"}}},
        format="json",
        headers={"Idempotency-Key": "replay-1"},
    )
    again = team.client(Role.DEVELOPER).post(
        f"/api/v1/runs/{diamond.pk}/replay",
        {"from_step": "letter", "overrides": {"summary": {"model": "echo-1"}}},
        format="json",
        headers={"Idempotency-Key": "replay-1"},
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["parent"], body["from_step"], body["trigger"]) == (str(diamond.pk), "letter", "replay")
    assert body["overrides"] == {"summary": {"model": "echo-1"}}
    assert {s["key"]: s["plan_reason"] for s in body["steps"]}["letter"] == "replayed from 'letter'"
    assert (again.status_code, again.json()["id"]) == (200, body["id"])


def test_bad_replay_bodies_are_field_level_400s(diamond, team):
    client = team.client(Role.DEVELOPER)
    url = f"/api/v1/runs/{diamond.pk}/replay"

    unknown_step = client.post(url, {"from_step": "nothing"}, format="json")
    bad_override = client.post(url, {"overrides": {"greet": {"temperature": 1}}}, format="json")
    empty_override = client.post(url, {"overrides": {"greet": {}}}, format="json")
    bad_inputs = client.post(url, {"inputs": ["x"]}, format="json")

    assert unknown_step.status_code == 400
    assert "from_step" in unknown_step.json()["errors"]
    assert bad_override.status_code == 400
    assert "overrides" in bad_override.json()["errors"]
    assert empty_override.status_code == 400
    assert bad_inputs.status_code == 400
    assert "inputs" in bad_inputs.json()["errors"]
    assert Run.objects.count() == 1


def test_viewers_do_not_replay(diamond, team):
    response = team.client(Role.VIEWER).post(f"/api/v1/runs/{diamond.pk}/replay", {"dry_run": True}, format="json")

    assert response.status_code == 403
