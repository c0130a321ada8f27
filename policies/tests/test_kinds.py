"""The policy kind registry: every kind declares what the API, the admin and the judges need, and
the model's choices name the same kinds."""

import jsonschema
import pytest

from policies import kinds
from policies.choices import PolicyAction, PolicyKind
from policies.configs import config_errors
from policies.kinds.base import PolicyKindBase

ALL = kinds.all_kinds()


def test_policy_kind_choices_and_the_registry_name_the_same_kinds_in_the_same_order():
    assert kinds.names() == list(PolicyKind.values)
    assert [kind.label for kind in ALL] == list(PolicyKind.labels)


@pytest.mark.parametrize("kind", ALL, ids=lambda kind: kind.name)
def test_every_kind_declares_schema_example_actions_and_stages(kind):
    jsonschema.Draft202012Validator.check_schema(kind.schema)
    assert kind.schema["type"] == "object"
    assert kind.schema["properties"]
    assert kind.example
    assert config_errors(kind.name, kind.example) == []
    assert kind.actions
    assert kind.actions <= set(PolicyAction.values)
    assert kind.stages
    assert kind.stages <= set(kinds.STAGES)
    assert type(kind).judge is not PolicyKindBase.judge


@pytest.mark.parametrize("kind", ALL, ids=lambda kind: kind.name)
def test_a_schema_with_alternatives_has_a_hint_for_when_none_is_given(kind):
    assert bool(kind.any_of_hint) == ("anyOf" in kind.schema)


def test_only_call_stage_kinds_reserve_spend():
    assert {kind.name for kind in ALL if kind.reserves} == {PolicyKind.BUDGET, PolicyKind.RUN_CEILING}
    assert all(kinds.CALL in kind.stages for kind in ALL if kind.reserves)


def test_run_level_kinds_never_ask_for_approval():
    # Before a run exists (and while it waits for a slot) there is no step to park.
    for kind in ALL:
        if kinds.CALL not in kind.stages:
            assert PolicyAction.REQUIRE_APPROVAL not in kind.actions, kind.name


def test_each_stage_judges_the_kinds_that_declare_it():
    assert set(kinds.at(kinds.ADMISSION)) == {PolicyKind.RATE_LIMIT, PolicyKind.BUDGET}
    assert set(kinds.at(kinds.SLOT)) == {PolicyKind.CONCURRENCY}
    assert set(kinds.at(kinds.CALL)) == {
        PolicyKind.MODEL_ALLOWLIST,
        PolicyKind.TOOL_ALLOWLIST,
        PolicyKind.APPROVAL,
        PolicyKind.BUDGET,
        PolicyKind.RUN_CEILING,
    }


def test_an_unknown_kind_is_not_in_the_registry():
    assert kinds.get("lottery") is None
    assert all("lottery" not in kinds.at(stage) for stage in kinds.STAGES)
