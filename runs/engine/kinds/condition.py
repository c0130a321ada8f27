"""A condition step: compare two rendered values and skip the branch not taken."""

import json
import operator
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


def run(ctx: StepContext) -> dict:
    left = _coerce(ctx.render(ctx.spec["left"]) if isinstance(ctx.spec["left"], str) else ctx.spec["left"])
    right_raw = ctx.spec["right"]
    right = _coerce(ctx.render(right_raw) if isinstance(right_raw, str) else right_raw)
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
