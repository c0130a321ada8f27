"""Rendering step templates: sandboxed, strict about missing values, never mutating what they read."""

import pytest
from jinja2.exceptions import SecurityError, UndefinedError

from workflows import templating


def test_it_renders_inputs_and_step_outputs():
    rendered = templating.render(
        "{{ inputs.topic }}: {{ steps.fetch.output.title }}", inputs={"topic": "AI"}, steps={"fetch": {"title": "News"}}
    )
    assert rendered == "AI: News"


def test_it_renders_every_string_inside_a_tool_input_keeping_its_shape():
    value = {"q": "{{ inputs.topic }}", "n": 3, "tags": ["{{ inputs.topic | upper }}", None]}
    assert templating.render_value(value, inputs={"topic": "ai"}, steps={}) == {"q": "ai", "n": 3, "tags": ["AI", None]}


def test_a_missing_value_fails_instead_of_rendering_empty():
    with pytest.raises(UndefinedError):
        templating.render("{{ inputs.nope }}", inputs={}, steps={})


@pytest.mark.parametrize(
    "source",
    ["{{ ''.__class__.__mro__ }}", "{{ inputs.topic.__class__ }}", "{{ inputs.tags.append(1) }}"],
)
def test_the_sandbox_refuses_unsafe_or_mutating_access(source):
    with pytest.raises(SecurityError):
        templating.render(source, inputs={"topic": "x", "tags": []}, steps={})


def test_it_finds_references_with_their_names_and_computed_hops():
    tree = templating.parse("{{ inputs.topic }} {{ steps.fetch.output[0] }} {{ steps[k] }} {{ other.x }}")
    assert templating.references(tree) == [
        templating.Reference("inputs", ("topic",)),
        templating.Reference("steps", ("fetch", "output", None)),
        templating.Reference("steps", (None,)),
    ]


def test_a_syntax_error_names_the_line():
    with pytest.raises(templating.TemplateProblem, match="line 3"):
        templating.parse("a\nb\n{% if %}")
