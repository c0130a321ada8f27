"""Policy kinds, one module each, behind ``base.PolicyKindBase`` and this registry. The registry
is what is judged: a kind it does not know is never judged (and never taken for a budget).
``PolicyKind`` (choices.py) names the same kinds in the same order for the model's choices."""

from .approval import Approval
from .base import ADMISSION, CALL, SLOT, STAGES, PolicyKindBase
from .budget import Budget
from .concurrency import Concurrency
from .model_allowlist import ModelAllowlist
from .rate_limit import RateLimit
from .run_ceiling import RunCeiling
from .tool_allowlist import ToolAllowlist

__all__ = ["ADMISSION", "CALL", "SLOT", "STAGES", "PolicyKindBase", "all_kinds", "at", "get", "names"]

_REGISTRY: dict[str, PolicyKindBase] = {}


def register(kind: PolicyKindBase) -> PolicyKindBase:
    _REGISTRY[kind.name] = kind
    return kind


def get(name: str) -> PolicyKindBase | None:
    return _REGISTRY.get(name)


def names() -> list[str]:
    """In registration order: the order the API docs and the admin list the kinds in."""
    return list(_REGISTRY)


def all_kinds() -> list[PolicyKindBase]:
    return list(_REGISTRY.values())


def at(stage: str) -> tuple[str, ...]:
    """The kinds judged at this stage."""
    return tuple(name for name, kind in _REGISTRY.items() if stage in kind.stages)


register(Budget())
register(RunCeiling())
register(RateLimit())
register(Concurrency())
register(ModelAllowlist())
register(ToolAllowlist())
register(Approval())
