"""Step templates: Jinja2 in its immutable sandbox, never ``eval``.

A template sees two variables: ``inputs`` (the run's inputs, e.g. ``{{ inputs.topic }}``) and
``steps`` (earlier steps' outputs, e.g. ``{{ steps.fetch.output.title }}``). Pure code: no Django.
"""

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.meta import find_undeclared_variables
from jinja2.sandbox import ImmutableSandboxedEnvironment

INPUTS = "inputs"
STEPS = "steps"
OUTPUT = "output"

# Immutable: a template may not mutate the inputs or outputs it is shown. StrictUndefined: a
# missing value fails the step loudly instead of rendering an empty string into a prompt.
_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


@dataclass(frozen=True)
class Reference:
    """One use of ``inputs`` or ``steps`` in a template: its root and the names after it, with
    None for a name computed at render time (``steps[name]``), which cannot be checked."""

    root: str
    path: tuple[str | None, ...]


class TemplateProblem(ValueError):
    """A template that does not parse; the message names the line."""


def parse(source: str) -> nodes.Template:
    try:
        return _env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template error on line {exc.lineno}: {(exc.message or '').rstrip('.')}") from None


def unknown_names(tree: nodes.Template) -> set[str]:
    """Free variables other than ``inputs``, ``steps`` and Jinja's globals (range, dict, ...)."""
    return find_undeclared_variables(tree) - {INPUTS, STEPS}


def references(tree: nodes.Template) -> list[Reference]:
    """Every ``inputs.x`` / ``steps.x.y`` chain, outermost only, in source order."""
    inner = {id(node.node) for node in tree.find_all((nodes.Getattr, nodes.Getitem))}
    found = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if id(node) in inner:
            continue  # part of a longer chain, which is reported instead
        reference = _chain(node)
        if reference is not None:
            found.append(reference)
    return found


# Ways a template says "this input may be missing": ``inputs.x | default(...)``, ``inputs.x is
# defined`` (or undefined), and ``'x' in inputs``.
_DEFAULT_FILTERS = {"default", "d"}
_DEFINED_TESTS = {"defined", "undefined"}


def guarded_inputs(tree: nodes.Template) -> set[str]:
    """Names of inputs the template reads through a default or tests for; a missing one of these
    does not fail the render. A test anywhere in the template counts for every use of that name."""
    guarded = set()
    for node in tree.find_all((nodes.Filter, nodes.Test)):
        names = _DEFAULT_FILTERS if isinstance(node, nodes.Filter) else _DEFINED_TESTS
        reference = _chain(node.node) if node.name in names and node.node is not None else None
        if reference is not None and reference.root == INPUTS and len(reference.path) == 1 and reference.path[0]:
            guarded.add(reference.path[0])
    for node in tree.find_all(nodes.Compare):
        operand = node.ops[0] if len(node.ops) == 1 else None
        if (
            operand is not None
            and operand.op in ("in", "notin")
            and isinstance(operand.expr, nodes.Name)
            and operand.expr.name == INPUTS
            and isinstance(node.expr, nodes.Const)
            and isinstance(node.expr.value, str)
        ):
            guarded.add(node.expr.value)
    return guarded


def _chain(node: nodes.Node) -> Reference | None:
    path: list[str | None] = []
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        path.insert(0, _hop_name(node))
        node = node.node
    if isinstance(node, nodes.Name) and node.name in (INPUTS, STEPS):
        return Reference(node.name, tuple(path))
    return None


def _hop_name(node: nodes.Getattr | nodes.Getitem) -> str | None:
    if isinstance(node, nodes.Getattr):
        return node.attr
    arg = node.arg
    return arg.value if isinstance(arg, nodes.Const) and isinstance(arg.value, str) else None


def render(source: str, *, inputs: dict, steps: dict[str, Any]) -> str:
    """Render one template. ``steps`` maps a step key to its output."""
    context = {INPUTS: inputs, STEPS: {key: {OUTPUT: output} for key, output in steps.items()}}
    return _compiled(source).render(context)


@functools.lru_cache(maxsize=1024)
def _compiled(source: str):
    # Compiling dominates rendering, and a workflow renders the same few templates on every run.
    return _env.from_string(source)


def render_value(value: Any, *, inputs: dict, steps: dict[str, Any]) -> Any:
    """Render every string inside a JSON value (a tool's input object), keeping its shape."""
    if isinstance(value, str):
        return render(value, inputs=inputs, steps=steps)
    if isinstance(value, dict):
        return {k: render_value(v, inputs=inputs, steps=steps) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, inputs=inputs, steps=steps) for v in value]
    return value


def strings_in(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """(path, string) for every string inside a JSON value, e.g. ("input.query", "{{ ... }}")."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings_in(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from strings_in(v, f"{where}[{i}]")
