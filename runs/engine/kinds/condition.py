"""A condition step: compare two rendered values and skip the branch not taken."""

import json
import operator
from collections.abc import Callable
from typing import Any

from workflows import dag

from ..context import StepContext, StepFailed, save_input
from .base import StepKind

_COMPARE = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "contains": lambda left, right: right in left,
    "in": lambda left, right: left in right,
}


def _coerce(value: Any) -> Any:
    """Rendered templates are text; compare "3" and 10 as numbers, "true" as a boolean."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def operands(spec: dict, render: Callable[[str], str]) -> tuple[Any, Any]:
    """The two sides of the comparison, rendered (strings are templates) and read as JSON where
    they parse. Also what a replay compares to decide whether the step may be reused."""
    left, right = (_coerce(render(side) if isinstance(side, str) else side) for side in (spec["left"], spec["right"]))
    return left, right


def run(ctx: StepContext) -> dict:
    left, right = operands(ctx.spec, ctx.render)
    try:
        outcome = bool(_COMPARE[ctx.spec["op"]](left, right))
    except TypeError as exc:
        raise StepFailed(
            f"Cannot compare {left!r} {ctx.spec['op']} {right!r}.", permanent=True, kind="ConditionError"
        ) from exc
    save_input(ctx, {"left": left, "op": ctx.spec["op"], "right": right})
    ctx.untaken = dag.untaken_branch(ctx.run.workflow_version.definition, ctx.step.key, outcome)
    return {"result": outcome, "branch": "then" if outcome else "else"}


KIND = StepKind("condition", run)
