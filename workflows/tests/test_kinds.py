"""The step kind registry: what each kind declares, and that a registered kind is validated by it."""

import pytest

from workflows import dag, kinds, validation
from workflows.tests.factories import CATALOG, INPUT_SCHEMA, condition_step, definition, tool_step


class NoteKind(kinds.StepKind):
    """A kind made up for these tests: one required template field."""

    name = "note"
    fields = frozenset({"text"})
    required = ("text",)
    templated = ("text",)

    def check(self, step: dict, known: kinds.Known) -> list[str]:
        return [] if len(step.get("text", "")) <= 30 else ["text: at most 30 characters."]


@pytest.fixture
def note_kind(monkeypatch):
    monkeypatch.setitem(kinds._REGISTRY, NoteKind.name, NoteKind())


def test_the_kinds_are_listed_in_the_order_they_are_registered():
    assert kinds.names() == ("agent", "tool", "approval", "condition")


@pytest.mark.parametrize("name", ["agent", "tool", "approval", "condition"])
def test_each_kind_is_found_by_its_name_and_requires_only_its_own_fields(name):
    kind = kinds.get(name)
    assert kind.name == name
    assert set(kind.required) <= kind.fields
    assert set(kind.templated) <= kind.fields
    assert not kind.fields & validation.COMMON_FIELDS


@pytest.mark.parametrize("name", ["script", "", None, 1, ["agent"], {"agent": 1}])
def test_an_unknown_kind_or_a_value_that_is_not_a_name_finds_nothing(name):
    assert kinds.get(name) is None


def test_only_a_condition_chooses_the_steps_that_wait_for_it():
    step = condition_step("c", then=["a"], **{"else": ["b"]})
    assert kinds.get("condition").chooses(step) == ["a", "b"]
    assert kinds.get("condition").chooses({**step, "then": "a"}) == ["b"]  # tolerant of bad input
    assert kinds.get("tool").chooses(tool_step("t")) == []


def test_the_tool_kind_reads_templates_nested_in_its_input():
    step = tool_step("t", input={"q": "{{ inputs.topic }}", "more": ["{{ inputs.topic | upper }}", 3]})
    assert [field for field, _ in kinds.get("tool").template_fields(step)] == ["input.q", "input.more[0]"]


def test_a_registered_kind_is_validated_by_its_own_fields_and_check(note_kind):
    steps = [
        {"key": "ok", "kind": "note", "text": "On {{ inputs.topic }}"},
        {"key": "bare", "kind": "note"},
        {"key": "long", "kind": "note", "text": "x" * 31, "prompt": "p"},
        {"key": "bad", "kind": "note", "text": "{{ inputs.nope }}"},
        {"key": "odd", "kind": "nope"},
    ]
    errors = validation.validate({"steps": steps}, INPUT_SCHEMA, CATALOG)["definition"]["steps"]
    assert errors == {
        "bare": ["text: required for a note step."],
        "long": ["prompt: not a field of a note step.", "text: at most 30 characters."],
        "bad": ["text: unknown input 'nope'; the input schema's properties are: topic."],
        "odd": ["kind: must be one of agent, tool, approval, condition, note."],
    }


def test_a_step_of_a_registered_kind_is_planned_like_any_other(note_kind):
    value = definition(tool_step("t"), {"key": "n", "kind": "note", "text": "hi", "depends_on": ["t"]})
    assert validation.validate(value, INPUT_SCHEMA, CATALOG) == {}
    assert dag.ready_steps(value, {"t": "succeeded"}) == ["n"]
