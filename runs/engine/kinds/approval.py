"""An approval step: a gate. It runs nothing; the step waits for a person's decision."""

from workflows.kinds.approval import DEFAULT_APPROVER_ROLE

from ..context import StepContext
from .base import StepKind


def run(ctx: StepContext) -> dict:
    """The gate's waiting_approval payload: who may open it."""
    return {"role": ctx.spec.get("role", DEFAULT_APPROVER_ROLE)}


KIND = StepKind("approval", run, parks=True)
