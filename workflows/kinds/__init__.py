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
#: Kinds only system workflows may use (the task board's ``task``): people's definitions never do.
_SYSTEM: set[str] = set()


def register(kind: StepKind, *, system: bool = False) -> StepKind:
    _REGISTRY[kind.name] = kind
    if system:
        _SYSTEM.add(kind.name)
    return kind


def get(name: Any) -> StepKind | None:
    """The kind named ``name``; None for an unknown name, or a value that is not a name at all
    (a definition is user input: its "kind" may be a list)."""
    return _REGISTRY.get(name) if isinstance(name, str) else None


def names(*, system: bool = False) -> tuple[str, ...]:
    """The kinds people may use; with ``system``, the system kinds too."""
    return tuple(name for name in _REGISTRY if system or name not in _SYSTEM)


def is_system(name: str) -> bool:
    return name in _SYSTEM


register(AgentKind())
register(ToolKind())
register(ApprovalKind())
register(ConditionKind())
