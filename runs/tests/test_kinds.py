"""The engine's step kind registry, and that it agrees with the one validation reads. The ``echo``
kind here is the README's worked example ("Add a step kind"), registered on both sides."""

import pytest

from runs.choices import EventType, RunStatus, StepStatus
from runs.engine import kinds as engine_kinds
from runs.engine.context import StepContext, StepFailed, save_input
from workflows import kinds as workflow_kinds

from .factories import agent_step, event_types, make_catalog, make_workflow, start, step_of


def test_the_workflow_and_engine_registries_name_the_same_kinds_in_the_same_order():
    assert engine_kinds.names() == workflow_kinds.names(system=True)


def test_only_the_approval_gate_parks():
    assert [name for name in engine_kinds.names() if engine_kinds.get(name).parks] == ["approval"]


def test_an_unknown_kind_is_a_permanent_failure():
    with pytest.raises(StepFailed) as caught:
        engine_kinds.get("script")
    assert caught.value.as_error() == {
        "type": "StepFailed",
        "message": "Unknown step kind 'script'.",
        "permanent": True,
    }


# ------------------------------------------------------------------------------
# A kind added as the README shows
# ------------------------------------------------------------------------------
class EchoKind(workflow_kinds.StepKind):
    name = "echo"
    fields = frozenset({"text"})
    required = ("text",)
    templated = ("text",)

    def check(self, step: dict, known: workflow_kinds.Known) -> list[str]:
        return [] if isinstance(step.get("text", ""), str) else ["text: must be a template string."]


def run_echo(ctx: StepContext) -> str:
    text = ctx.render(ctx.spec["text"])
    save_input(ctx, {"text": text})
    return text


@pytest.fixture
def echo_validated(monkeypatch):
    monkeypatch.setitem(workflow_kinds._REGISTRY, "echo", EchoKind())


@pytest.fixture
def echo_kind(echo_validated, monkeypatch):
    monkeypatch.setitem(engine_kinds._REGISTRY, "echo", engine_kinds.StepKind("echo", run_echo))


def test_a_step_of_an_added_kind_runs_with_the_others(engine, team, echo_kind):
    make_catalog(team.project)
    workflow = make_workflow(
        team.project,
        agent_step("a"),
        {"key": "say", "kind": "echo", "text": "{{ inputs.name }} got {{ steps.a.output }}", "depends_on": ["a"]},
    )
    run = start(workflow)

    assert run.status == RunStatus.SUCCEEDED
    say = step_of(run, "say")
    assert say.output == "Ada got echo: Hello Ada"
    assert say.input == {"text": "Ada got echo: Hello Ada"}
    assert event_types(run, step=say) == [EventType.STEP_QUEUED, EventType.STEP_STARTED, EventType.STEP_SUCCEEDED]


def test_a_kind_the_engine_does_not_know_fails_its_step_for_good(engine, team, echo_validated):
    """A version saved while validation knew a kind the engine no longer runs: no retry can help."""
    workflow = make_workflow(team.project, {"key": "say", "kind": "echo", "text": "hi"})
    run = start(workflow)

    assert run.status == RunStatus.FAILED
    say = step_of(run, "say")
    assert (say.status, say.attempt) == (StepStatus.FAILED, 1)
    assert say.error == {"type": "StepFailed", "message": "Unknown step kind 'echo'.", "permanent": True}
