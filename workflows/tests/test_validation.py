"""Validation of a definition and its input schema: one test per rejection."""

import pytest

from workflows import validation
from workflows.kinds.approval import APPROVER_ROLES, DEFAULT_APPROVER_ROLE
from workflows.tests.factories import (
    CATALOG,
    INPUT_SCHEMA,
    agent_step,
    approval_step,
    condition_step,
    definition,
    tool_step,
)

ROLE_MESSAGE = (
    "role: must be one of owner, admin, developer; "
    "a gate cannot name a role below the developers who edit the workflow."
)


def errors_of(value, input_schema=INPUT_SCHEMA, catalog=CATALOG) -> dict:
    return validation.validate(value, input_schema, catalog)


def step_errors(*steps: dict, input_schema=INPUT_SCHEMA) -> dict[str, list[str]]:
    """The per-step messages of a definition made of ``steps`` (which must have no other errors)."""
    errors = errors_of(definition(*steps), input_schema)
    assert set(errors) == {"definition"}, errors
    assert set(errors["definition"]) == {"steps"}, errors
    return errors["definition"]["steps"]


# ------------------------------------------------------------------------------
# Valid definitions
# ------------------------------------------------------------------------------
def test_the_default_definition_is_valid():
    assert errors_of(definition()) == {}


def test_every_kind_with_every_optional_field_is_valid():
    value = definition(
        tool_step("fetch", input={"q": "{{ inputs.topic }}", "opts": {"tags": ["{{ inputs.topic | upper }}", 3]}}),
        agent_step("draft", depends_on=["fetch"], retry={"attempts": 10, "backoff_seconds": 0}, timeout_seconds=3600),
        approval_step("review", depends_on=["draft"], message="Ship {{ steps.draft.output }}?", role="developer"),
        condition_step("ok", depends_on=["review"], right=3, then=["publish"], **{"else": ["notify"]}),
        agent_step("publish", prompt="{{ steps.draft.output }} / {{ steps.ok.output }}", timeout_seconds=1),
        agent_step("notify", retry={"attempts": 1, "backoff_seconds": 3600}),
    )
    assert errors_of(value) == {}


def test_a_template_may_name_a_step_reached_only_through_others():
    value = definition(
        tool_step("a"),
        tool_step("b", depends_on=["a"]),
        agent_step("c", depends_on=["b"], prompt="{{ steps.a.output }}"),
    )
    assert errors_of(value) == {}


def test_a_branch_step_waits_for_its_condition_so_it_may_read_its_output():
    value = definition(condition_step("check", then=["act"]), agent_step("act", prompt="{{ steps.check.output }}"))
    assert errors_of(value) == {}


@pytest.mark.parametrize(
    "template",
    [
        "{{ inputs | tojson }}",
        "{% for t in inputs.topic %}{{ t }}{% endfor %}",
        "{% set n = 3 %}{{ n }} {{ range(n) | list }}",
        "{{ steps.fetch.output['items'][0].title }}",
        "{{ steps.fetch.output[inputs.topic] }}",
        "{{ inputs['topic'] }}",
        "plain text",
    ],
)
def test_templates_may_use_jinja_freely_within_inputs_and_earlier_steps(template):
    assert errors_of(definition(tool_step("fetch"), agent_step("use", depends_on=["fetch"], prompt=template))) == {}


def test_steps_may_be_listed_in_any_order():
    value = definition(agent_step("b", depends_on=["a"], prompt="{{ steps.a.output }}"), tool_step("a"))
    assert errors_of(value) == {}


def test_an_empty_input_schema_is_valid_when_no_template_reads_inputs():
    assert errors_of(definition(approval_step("gate")), input_schema={}) == {}


# ------------------------------------------------------------------------------
# The definition as a whole
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [None, [], "steps", 3, True])
def test_it_rejects_a_definition_that_is_not_an_object(value):
    assert errors_of(value) == {"definition": ['Must be a JSON object with a list of steps, e.g. {"steps": [...]}.']}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({}, "This field is required."),
        ({"steps": {"a": {}}}, "Must be a list of steps."),
        ({"steps": []}, "Add at least one step."),
        (
            {"steps": [approval_step(f"s{i}") for i in range(validation.MAX_STEPS + 1)]},
            f"At most {validation.MAX_STEPS} steps.",
        ),
    ],
    ids=["missing", "not-a-list", "empty", "too-many"],
)
def test_it_rejects_missing_or_empty_steps(value, message):
    assert errors_of(value) == {"definition": {"steps": [message]}}


def test_it_rejects_unknown_top_level_fields():
    value = {**definition(), "outputs": {}}
    assert errors_of(value) == {"definition": {"outputs": ['Unknown field; a definition has only "steps".']}}


def test_it_rejects_a_step_that_is_not_an_object():
    assert step_errors(approval_step("a"), "b") == {"#1": ["Must be an object with at least a key and a kind."]}


# ------------------------------------------------------------------------------
# Keys and kinds
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("key", [None, "", "Fetch", "1st", "fetch-page", "fetch page", "x" * 65, 7, "fetch\n"])
def test_it_rejects_a_missing_or_malformed_key_naming_the_step_by_position(key):
    step = approval_step("x")
    step.pop("key") if key is None else step.update(key=key)
    errors = step_errors(approval_step("first"), step)
    assert list(errors) == ["#1"]
    assert errors["#1"][0].startswith("key: required; a lowercase letter")


def test_the_longest_key_is_64_characters():
    assert errors_of(definition(approval_step("x" * 64))) == {}


def test_it_rejects_duplicate_keys_naming_the_later_step_by_position():
    errors = step_errors(approval_step("gate"), tool_step("fetch"), approval_step("gate", role="chief"))
    assert errors == {"#2": ["key: 'gate' is already the key of step #0.", ROLE_MESSAGE]}


@pytest.mark.parametrize("kind", [None, "", "script", "Agent", 1])
def test_it_rejects_a_missing_or_unknown_kind(kind):
    step = {"key": "a"} if kind is None else {"key": "a", "kind": kind}
    assert step_errors(step) == {"a": ["kind: must be one of agent, tool, approval, condition."]}


def test_it_rejects_fields_that_do_not_belong_to_the_kind():
    errors = step_errors(tool_step("a", prompt="hi", depend_on=["x"]))
    assert errors == {"a": ["depend_on: not a field of a tool step.", "prompt: not a field of a tool step."]}


@pytest.mark.parametrize(
    ("step", "field"),
    [
        ({"key": "a", "kind": "agent", "prompt": "hi"}, "agent"),
        ({"key": "a", "kind": "agent", "agent": "writer"}, "prompt"),
        ({"key": "a", "kind": "tool"}, "tool"),
        ({"key": "a", "kind": "condition", "op": "==", "right": 1, "then": ["b"]}, "left"),
        ({"key": "a", "kind": "condition", "left": "x", "right": 1, "then": ["b"]}, "op"),
        ({"key": "a", "kind": "condition", "left": "x", "op": "==", "then": ["b"]}, "right"),
    ],
)
def test_it_rejects_a_step_missing_a_field_its_kind_requires(step, field):
    errors = step_errors(step, approval_step("b"))
    assert errors == {"a": [f"{field}: required for a {step['kind']} step."]}


# ------------------------------------------------------------------------------
# Dependencies and cycles
# ------------------------------------------------------------------------------
def test_it_rejects_depends_on_naming_an_unknown_step():
    assert step_errors(tool_step("fetch", depends_on=["nope"])) == {"fetch": ["depends_on: unknown step 'nope'."]}


@pytest.mark.parametrize("value", ["a", {"a": 1}, [1], None])
def test_it_rejects_depends_on_that_is_not_a_list_of_keys(value):
    assert step_errors(approval_step("a"), approval_step("b", depends_on=value)) == {
        "b": ["depends_on: must be a list of step keys."]
    }


def test_it_rejects_a_dependency_listed_twice():
    errors = step_errors(approval_step("a"), approval_step("b", depends_on=["a", "a"]))
    assert errors == {"b": ["depends_on: 'a' is listed more than once."]}


def test_it_rejects_a_step_that_waits_for_itself():
    assert step_errors(approval_step("a", depends_on=["a"])) == {"a": ["cycle: a -> a (each step waits for the next)."]}


def test_it_rejects_a_cycle_and_names_it():
    errors = step_errors(
        approval_step("a", depends_on=["c"]), approval_step("b", depends_on=["a"]), approval_step("c", depends_on=["b"])
    )
    assert errors == {"a": ["cycle: a -> c -> b -> a (each step waits for the next)."]}


def test_it_rejects_a_cycle_through_a_condition_branch():
    errors = step_errors(condition_step("check", depends_on=["act"], then=["act"]), approval_step("act"))
    assert errors == {"check": ["cycle: check -> act -> check (each step waits for the next)."]}


def test_it_reports_each_separate_cycle():
    errors = step_errors(
        approval_step("a", depends_on=["b"]), approval_step("b", depends_on=["a"]), approval_step("c", depends_on=["c"])
    )
    assert errors == {
        "a": ["cycle: a -> b -> a (each step waits for the next)."],
        "c": ["cycle: c -> c (each step waits for the next)."],
    }


# ------------------------------------------------------------------------------
# Fields of each kind
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("step", "message"),
    [
        (agent_step("a", agent="ghost"), "agent: no agent 'ghost' in this project."),
        (agent_step("a", agent="retired"), "agent: 'retired' is disabled."),
        (agent_step("a", agent=["writer"]), "agent: must be the slug of a agent in this project."),
        (tool_step("a", tool="ghost"), "tool: no tool 'ghost' in this project."),
        (tool_step("a", tool="legacy"), "tool: 'legacy' is disabled."),
        (tool_step("a", tool=None), "tool: must be the slug of a tool in this project."),
    ],
)
def test_it_rejects_agents_and_tools_missing_from_the_catalog_or_disabled(step, message):
    assert step_errors(step) == {"a": [message]}


def test_an_empty_catalog_knows_no_agent_or_tool():
    errors = errors_of(definition(agent_step("a"), tool_step("b")), catalog={})
    assert errors["definition"]["steps"] == {
        "a": ["agent: no agent 'writer' in this project."],
        "b": ["tool: no tool 'search' in this project."],
    }


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (agent_step("a", prompt=["hi"]), "prompt: must be a template string."),
        (
            tool_step("a", input="q={{ inputs.topic }}"),
            'input: must be an object, e.g. {"query": "{{ inputs.topic }}"}.',
        ),
        (approval_step("a", message=5), "message: must be a template string."),
        (approval_step("a", role="root"), ROLE_MESSAGE),
        (condition_step("a", left=1, then=["b"]), "left: must be a template string."),
        (condition_step("a", op="=~", then=["b"]), "op: must be one of ==, !=, <, <=, >, >=, contains, in."),
    ],
)
def test_it_rejects_fields_of_the_wrong_type(step, message):
    assert step_errors(step, approval_step("b")) == {"a": [message]}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"timeout_seconds": 0}, "timeout_seconds: must be a whole number from 1 to 3600."),
        ({"timeout_seconds": 3601}, "timeout_seconds: must be a whole number from 1 to 3600."),
        ({"timeout_seconds": True}, "timeout_seconds: must be a whole number from 1 to 3600."),
        ({"timeout_seconds": 1.5}, "timeout_seconds: must be a whole number from 1 to 3600."),
        ({"retry": 3}, 'retry: must be an object like {"attempts": 3, "backoff_seconds": 10}.'),
        ({"retry": {"tries": 3}}, 'retry: must be an object like {"attempts": 3, "backoff_seconds": 10}.'),
        ({"retry": {"attempts": 0}}, "retry.attempts: must be a whole number from 1 to 10."),
        ({"retry": {"attempts": 11}}, "retry.attempts: must be a whole number from 1 to 10."),
        ({"retry": {"attempts": "3"}}, "retry.attempts: must be a whole number from 1 to 10."),
        ({"retry": {"backoff_seconds": -1}}, "retry.backoff_seconds: must be a whole number from 0 to 3600."),
        ({"retry": {"backoff_seconds": 3601}}, "retry.backoff_seconds: must be a whole number from 0 to 3600."),
    ],
)
def test_it_rejects_retry_and_timeout_out_of_range(extra, message):
    assert step_errors(tool_step("a", **extra)) == {"a": [message]}


# ------------------------------------------------------------------------------
# Conditions
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("branches", [{}, {"then": []}, {"then": [], "else": []}])
def test_it_rejects_a_condition_without_branches(branches):
    errors = step_errors(condition_step("check", **branches))
    assert errors == {"check": ["then/else: name the steps to run in at least one branch."]}


def test_it_rejects_a_branch_naming_an_unknown_step():
    errors = step_errors(condition_step("check", then=["act"], **{"else": ["ghost"]}), approval_step("act"))
    assert errors == {"check": ["else: unknown step 'ghost'."]}


def test_it_rejects_a_branch_that_is_not_a_list_of_keys():
    assert step_errors(condition_step("check", then="act"), approval_step("act")) == {
        "check": ["then: must be a list of step keys."]
    }


def test_it_rejects_a_step_in_both_branches():
    errors = step_errors(condition_step("check", then=["act"], **{"else": ["act"]}), approval_step("act"))
    assert errors == {"check": ["then/else: 'act' cannot be in both branches."]}


# ------------------------------------------------------------------------------
# Templates
# ------------------------------------------------------------------------------
def test_it_rejects_a_template_naming_an_unknown_step():
    errors = step_errors(agent_step("a", prompt="{{ steps.ghost.output }}"))
    assert errors == {"a": ["prompt: unknown step 'ghost'."]}


def test_it_rejects_a_template_naming_an_unknown_input():
    errors = step_errors(tool_step("a", input={"q": "{{ inputs.subject }}"}))
    assert errors == {"a": ["input.q: unknown input 'subject'; the input schema's properties are: topic."]}


OPTIONAL_DEPTH = {
    "type": "object",
    "properties": {"topic": {"type": "string"}, "depth": {"type": "integer", "default": 3}},
    "required": ["topic"],
}


def test_it_rejects_a_template_reading_an_optional_input_with_no_default():
    errors = step_errors(tool_step("a", input={"q": "{{ inputs.depth }} * 10"}), input_schema=OPTIONAL_DEPTH)
    assert list(errors) == ["a"]
    assert errors["a"][0].startswith("input.q: input 'depth' is optional, so a run may leave it out;")
    assert "{{ inputs.depth | default(...) }}" in errors["a"][0]


@pytest.mark.parametrize(
    "template",
    [
        "{{ inputs.depth | default(3) }}",
        "{{ inputs['depth'] | d(3) }}",
        "{% if inputs.depth is defined %}{{ inputs.depth }}{% endif %}",
        "{{ inputs.depth if 'depth' in inputs else 3 }}",
        "{% if inputs.depth is undefined %}3{% else %}{{ inputs.depth }}{% endif %}",
    ],
)
def test_an_optional_input_may_be_read_with_a_default_or_after_a_test(template):
    assert errors_of(definition(agent_step("a", prompt=template)), input_schema=OPTIONAL_DEPTH) == {}


def test_a_default_on_another_input_does_not_cover_an_optional_one():
    template = "{{ inputs.topic | default('x') }} {{ inputs.depth }}"
    errors = step_errors(agent_step("a", prompt=template), input_schema=OPTIONAL_DEPTH)
    assert "input 'depth' is optional" in errors["a"][0]


def test_it_says_when_the_input_schema_declares_no_inputs():
    errors = step_errors(agent_step("a"), input_schema={"type": "object"})
    assert errors == {"a": ["prompt: unknown input 'topic'; the input schema's properties are: none."]}


@pytest.mark.parametrize(
    "steps",
    [
        # a sibling: both wait for fetch, neither for the other
        [tool_step("fetch"), tool_step("b", depends_on=["fetch"]), agent_step("a", depends_on=["fetch"])],
        # a later step
        [tool_step("b", depends_on=["a"]), agent_step("a")],
        # no edge between them at all
        [tool_step("b"), agent_step("a")],
    ],
    ids=["sibling", "later", "unrelated"],
)
def test_it_rejects_a_template_naming_a_step_that_does_not_run_before(steps):
    for step in steps:
        if step["key"] == "a":
            step["prompt"] = "Use {{ steps.b.output }}"
    errors = step_errors(*steps)
    assert errors == {"a": ["prompt: step 'b' does not run before this one; add it to depends_on."]}


def test_it_rejects_a_template_naming_its_own_step():
    errors = step_errors(agent_step("a", prompt="{{ steps.a.output }}"))
    assert errors == {"a": ["prompt: step 'a' does not run before this one; add it to depends_on."]}


def test_it_rejects_anything_but_output_of_a_step():
    errors = step_errors(tool_step("b"), agent_step("a", depends_on=["b"], prompt="{{ steps.b.status }}"))
    assert errors == {"a": ["prompt: steps.b.status: only steps.b.output is available."]}


@pytest.mark.parametrize(
    ("template", "example"),
    [("{{ steps[inputs.topic].output }}", "steps.fetch.output"), ("{{ inputs[inputs.topic] }}", "inputs.topic")],
)
def test_it_rejects_computed_names_it_cannot_check(template, example):
    errors = step_errors(agent_step("a", prompt=template))
    assert errors == {"a": [f"prompt: write the name out, e.g. {example}; a computed name cannot be checked."]}


def test_it_rejects_a_template_with_a_syntax_error_naming_the_line():
    errors = step_errors(approval_step("a", message="Line one\n{{ inputs.topic "))
    assert list(errors) == ["a"]
    (message,) = errors["a"]
    assert message.startswith("message: template error on line 2: unexpected end of template")
    assert not message.endswith("..")


def test_it_rejects_variables_other_than_inputs_and_steps():
    errors = step_errors(
        condition_step("c", left="{{ secret }}", right="{{ os.environ }}", then=["b"]), approval_step("b")
    )
    assert errors == {
        "c": [
            "left: unknown variable 'secret'; use inputs.<name> or steps.<key>.output.",
            "right: unknown variable 'os'; use inputs.<name> or steps.<key>.output.",
        ]
    }


def test_it_checks_templates_nested_in_a_tool_input():
    errors = step_errors(tool_step("a", input={"opts": {"tags": ["ok", "{{ steps.zz.output }}"]}}))
    assert errors == {"a": ["input.opts.tags[1]: unknown step 'zz'."]}


# ------------------------------------------------------------------------------
# The input schema
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (None, 'Must be a JSON Schema object, e.g. {"type": "object", "properties": {"topic": {"type": "string"}}}.'),
        ([], 'Must be a JSON Schema object, e.g. {"type": "object", "properties": {"topic": {"type": "string"}}}.'),
        ({"type": "strang"}, "Not a valid JSON Schema at type: 'strang' is not valid under any of the given schemas."),
        ({"type": "object", "properties": []}, "Not a valid JSON Schema at properties: [] is not of type 'object'."),
        ({"type": "string"}, 'type: the inputs are one object, so the type must be "object".'),
    ],
)
def test_it_rejects_an_input_schema_that_is_not_a_valid_json_schema_of_an_object(schema, message):
    errors = errors_of(definition(approval_step("a")), input_schema=schema)
    assert errors == {"input_schema": [message]}


def test_with_a_broken_input_schema_it_does_not_also_report_every_input_as_unknown():
    errors = errors_of(definition(), input_schema={"type": 5})
    assert list(errors) == ["input_schema"]


def test_it_reports_definition_and_input_schema_errors_together():
    errors = errors_of(definition(tool_step("fetch", depends_on=["nope"])), input_schema=[])
    assert errors == {
        "input_schema": [
            'Must be a JSON Schema object, e.g. {"type": "object", "properties": {"topic": {"type": "string"}}}.'
        ],
        "definition": {"steps": {"fetch": ["depends_on: unknown step 'nope'."]}},
    }


def test_flat_messages_puts_one_line_per_message_with_its_path():
    errors = {"definition": {"steps": {"a": ["x.", "y."]}}, "input_schema": ["z."]}
    assert validation.flat_messages(errors) == [
        "definition > steps > a: x.",
        "definition > steps > a: y.",
        "input_schema: z.",
    ]


def test_the_approver_roles_are_the_project_roles_from_developer_up():
    from sparkops.roles import Role

    assert set(APPROVER_ROLES) == {role for role in Role.values if Role.at_least(role, Role.DEVELOPER)}
    assert DEFAULT_APPROVER_ROLE == Role.ADMIN


def test_a_gate_cannot_name_the_viewer_role():
    """Viewers only read: a gate they could open would let them move a developer's run on."""
    assert step_errors(approval_step("a", role="viewer")) == {"a": [ROLE_MESSAGE]}
