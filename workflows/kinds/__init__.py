"""Step kinds, one module each, behind ``base.StepKind`` and this registry: what validation and the
planner know of each kind. The engine runs them through ``runs.engine.kinds``, which registers the
same names. Kinds are listed in the order they are registered here (error messages name them so)."""

from typing import Any

from .agent import AgentKind
from .approval import ApprovalKind
from .base import Known, StepKind
from .condition import ConditionKind
from .tool import ToolKind

__all__ = ["Known", "StepKind", "get", "names", "register"]

_REGISTRY: dict[str, StepKind] = {}


def register(kind: StepKind) -> StepKind:
    _REGISTRY[kind.name] = kind
    return kind


def get(name: Any) -> StepKind | None:
    """The kind named ``name``; None for an unknown name, or a value that is not a name at all
    (a definition is user input: its "kind" may be a list)."""
    return _REGISTRY.get(name) if isinstance(name, str) else None


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


register(AgentKind())
register(ToolKind())
register(ApprovalKind())
register(ConditionKind())
