"""The engine side of each step kind: one module each, behind ``base.StepKind`` and this registry.
It registers the names ``workflows.kinds`` validates, in the same order."""

from ..context import StepFailed
from . import agent, approval, condition, tool
from .base import StepKind

__all__ = ["StepKind", "get", "names", "register"]

_REGISTRY: dict[str, StepKind] = {}


def register(kind: StepKind) -> StepKind:
    _REGISTRY[kind.name] = kind
    return kind


def get(name: str) -> StepKind:
    try:
        return _REGISTRY[name]
    except KeyError:
        # A version saved before its kind was removed: nothing will run it, retrying cannot help.
        raise StepFailed(f"Unknown step kind {name!r}.", permanent=True) from None


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


register(agent.KIND)
register(tool.KIND)
register(approval.KIND)
register(condition.KIND)
