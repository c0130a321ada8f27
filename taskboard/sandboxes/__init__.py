"""Sandbox providers, one module each, behind ``base.SandboxProvider`` and this registry."""

from .base import ExecResult, Limits, SandboxError, SandboxProvider
from .e2b import E2BProvider
from .local import LocalProvider

_REGISTRY: dict[str, SandboxProvider] = {}


def register(provider: SandboxProvider) -> SandboxProvider:
    _REGISTRY[provider.name] = provider
    return provider


def get(name: str) -> SandboxProvider:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SandboxError(f"Unknown sandbox provider {name!r}; one of: {', '.join(names())}.") from None


def names() -> list[str]:
    return sorted(_REGISTRY)


register(LocalProvider())
register(E2BProvider())

__all__ = ["ExecResult", "Limits", "SandboxError", "SandboxProvider", "get", "names", "register"]
