"""The pure graph rules: dependencies, order, the planner, and properties over random DAGs."""

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workflows import dag, validation
from workflows.tests.factories import CATALOG, agent_step, approval_step, condition_step, definition, tool_step

# ------------------------------------------------------------------------------
# Order and planning
# ------------------------------------------------------------------------------
BRANCHY = definition(
    tool_step("fetch"),
    condition_step("check", depends_on=["fetch"], then=["publish"], **{"else": ["notify"]}),
    agent_step("publish"),
    agent_step("notify"),
    agent_step("archive", depends_on=["publish"]),
    agent_step("log", depends_on=["fetch"]),
)


def test_dependencies_include_the_condition_that_names_a_branch_step():
    assert dag.dependencies(BRANCHY) == {
        "fetch": [],
        "check": ["fetch"],
        "publish": ["check"],
        "notify": ["check"],
        "archive": ["publish"],
        "log": ["fetch"],
    }


def test_topological_order_keeps_definition_order_between_independent_steps():
    assert dag.topological_order(BRANCHY) == ["fetch", "check", "publish", "notify", "archive", "log"]
    later_first = definition(approval_step("b", depends_on=["a"]), approval_step("c"), approval_step("a"))
    assert dag.topological_order(later_first) == ["c", "a", "b"]


def test_topological_order_names_a_cycle():
    with pytest.raises(dag.CycleError) as caught:
        dag.topological_order(definition(approval_step("a", depends_on=["b"]), approval_step("b", depends_on=["a"])))
    assert caught.value.cycle == ["a", "b", "a"]
    assert str(caught.value) == "cycle: a -> b -> a"


def test_ready_steps_are_those_whose_dependencies_all_succeeded():
    assert dag.ready_steps(BRANCHY, {}) == ["fetch"]
    assert dag.ready_steps(BRANCHY, {"fetch": "running"}) == []
    assert dag.ready_steps(BRANCHY, {"fetch": "succeeded"}) == ["check", "log"]
    assert dag.ready_steps(BRANCHY, {"fetch": "succeeded", "check": "succeeded", "log": "queued"}) == [
        "publish",
        "notify",
    ]


def test_a_failed_dependency_leaves_its_dependents_waiting():
    assert dag.ready_steps(BRANCHY, {"fetch": "failed"}) == []
    assert dag.steps_to_skip(BRANCHY, {"fetch": "failed"}) == []


def test_an_untaken_branch_is_skipped_with_everything_downstream():
    assert dag.untaken_branch(BRANCHY, "check", outcome=True) == ["notify"]
    assert dag.untaken_branch(BRANCHY, "check", outcome=False) == ["publish"]
    statuses = {"fetch": "succeeded", "check": "succeeded", "log": "succeeded", "publish": "skipped"}
    assert dag.steps_to_skip(BRANCHY, statuses) == ["archive"]
    assert dag.ready_steps(BRANCHY, statuses) == ["notify"]


def test_a_join_after_a_skipped_step_is_skipped_too():
    joined = definition(
        condition_step("check", then=["a"], **{"else": ["b"]}),
        approval_step("a"),
        approval_step("b"),
        approval_step("join", depends_on=["a", "b"]),
    )
    assert dag.steps_to_skip(joined, {"check": "succeeded", "a": "succeeded", "b": "skipped"}) == ["join"]


def test_step_changes_lists_added_removed_and_changed_keys():
    old = definition(tool_step("a"), tool_step("b"), tool_step("c"))
    new = definition(tool_step("a"), tool_step("b", timeout_seconds=5), tool_step("d"))
    assert dag.step_changes(old, new) == {"added": ["d"], "removed": ["c"], "changed": ["b"]}


# ------------------------------------------------------------------------------
# Properties over random DAGs
# ------------------------------------------------------------------------------
@st.composite
def dags(draw, max_steps: int = 10) -> dict:
    """A valid definition: each step waits for a random set of earlier ones, conditions branch to
    later ones, templates read ancestors' outputs, and the list comes shuffled."""
    count = draw(st.integers(1, max_steps))
    keys = [f"s{i}" for i in range(count)]
    steps = []
    for i, key in enumerate(keys):
        depends_on = draw(st.lists(st.sampled_from(keys[:i]), unique=True)) if i else []
        kinds = ["agent", "tool", "approval"] + (["condition"] if i < count - 1 else [])
        steps.append(_random_step(draw, key, draw(st.sampled_from(kinds)), depends_on, keys[i + 1 :]))
    value = {"steps": draw(st.permutations(steps))}
    for step in value["steps"]:
        _read_an_ancestor(draw, step, value)
    return value


def _random_step(draw, key: str, kind: str, depends_on: list[str], later: list[str]) -> dict:
    step = {"key": key, "kind": kind, "depends_on": depends_on}
    if kind == "agent":
        step |= {"agent": "writer", "prompt": "{{ inputs.topic }}"}
    elif kind == "tool":
        step |= {"tool": "search", "input": {"q": "{{ inputs.topic }}"}}
    elif kind == "condition":
        then = draw(st.lists(st.sampled_from(later), min_size=1, unique=True))
        otherwise = draw(st.lists(st.sampled_from([k for k in later if k not in then] or [None]), unique=True))
        step |= {
            "left": "{{ inputs.topic }}",
            "op": "==",
            "right": "x",
            "then": then,
            "else": [k for k in otherwise if k],
        }
    return step


def _read_an_ancestor(draw, step: dict, value: dict) -> None:
    ancestors = sorted(dag.ancestors(dag.dependencies(value), step["key"]))
    if ancestors and step["kind"] == "agent":
        step["prompt"] += " {{ steps." + draw(st.sampled_from(ancestors)) + ".output }}"


INPUT_ONLY = {"type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"]}


@given(dags())
@settings(deadline=None)
def test_random_valid_dags_validate(value):
    assert validation.validate(value, INPUT_ONLY, CATALOG) == {}


@given(dags())
@settings(deadline=None)
def test_topological_order_puts_every_step_after_what_it_waits_for(value):
    order = dag.topological_order(value)
    assert sorted(order) == sorted(step["key"] for step in value["steps"])
    for key, waits_for in dag.dependencies(value).items():
        assert all(order.index(needed) < order.index(key) for needed in waits_for)


@given(dags(), st.data())
@settings(deadline=None)
def test_a_back_edge_makes_a_cycle_that_is_rejected_and_named(value, data):
    deps = dag.dependencies(value)
    candidates = [(key, ancestor) for key in deps for ancestor in sorted(dag.ancestors(deps, key))]
    if not candidates:
        return  # no step waits for another: nothing to point back at
    descendant, ancestor = data.draw(st.sampled_from(candidates))
    broken = copy.deepcopy(value)
    step = next(step for step in broken["steps"] if step["key"] == ancestor)
    step["depends_on"] = [*step["depends_on"], descendant]
    errors = validation.validate(broken, INPUT_ONLY, CATALOG)
    messages = [m for ms in errors["definition"]["steps"].values() for m in ms]
    assert any(m.startswith("cycle: ") for m in messages), errors
    with pytest.raises(dag.CycleError) as caught:
        dag.topological_order(broken)
    cycle = caught.value.cycle
    assert cycle[0] == cycle[-1]
    assert {ancestor, descendant} <= set(cycle)


STATUSES = ["pending", "queued", "running", "waiting_approval", "succeeded", "failed", "skipped", None]


@given(dags(), st.data())
@settings(deadline=None)
def test_ready_steps_are_exactly_the_pending_steps_whose_dependencies_succeeded(value, data):
    keys = [step["key"] for step in value["steps"]]
    drawn = data.draw(st.lists(st.sampled_from(STATUSES), min_size=len(keys), max_size=len(keys)))
    statuses = {key: status for key, status in zip(keys, drawn, strict=True) if status is not None}
    ready = dag.ready_steps(value, statuses)
    for key, waits_for in dag.dependencies(value).items():
        expected = statuses.get(key, "pending") == "pending" and all(statuses.get(k) == "succeeded" for k in waits_for)
        assert (key in ready) == expected


@given(dags())
@settings(deadline=None)
def test_running_ready_steps_until_none_are_left_runs_each_step_once_after_its_dependencies(value):
    statuses: dict[str, str] = {}
    deps = dag.dependencies(value)
    for _ in value["steps"]:
        ready = dag.ready_steps(value, statuses)
        if not ready:
            break
        for key in ready:
            assert all(statuses.get(needed) == "succeeded" for needed in deps[key])
            assert key not in statuses
        statuses |= dict.fromkeys(ready, "succeeded")
    assert statuses == {step["key"]: "succeeded" for step in value["steps"]}


@given(dags(), st.data())
@settings(deadline=None)
def test_skipping_a_step_skips_exactly_the_pending_steps_downstream_of_it(value, data):
    deps = dag.dependencies(value)
    skipped = data.draw(st.sampled_from(sorted(deps)))
    downstream = {key for key in deps if skipped in dag.ancestors(deps, key)}
    assert set(dag.steps_to_skip(value, {skipped: "skipped"})) == downstream
