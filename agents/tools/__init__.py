"""Tool executors, one module per tool kind, behind ``base.ToolExecutor`` and this registry."""

from .base import CallLimits, ToolError, ToolExecutor, ToolResult
from .builtin import BuiltinExecutor
from .http import HttpExecutor

_EXECUTORS: dict[str, ToolExecutor] = {e.kind: e for e in (HttpExecutor(), BuiltinExecutor())}


def register(executor: ToolExecutor) -> ToolExecutor:
    """Add a kind run by an app above this one (the task board's sandbox tools register at
    ready()): this layer never imports the app that executes them."""
    _EXECUTORS[executor.kind] = executor
    return executor


def get(kind: str) -> ToolExecutor:
    try:
        return _EXECUTORS[kind]
    except KeyError:
        raise ToolError(f"Unknown tool kind {kind!r}.", permanent=True) from None


__all__ = ["CallLimits", "ToolError", "ToolExecutor", "ToolResult", "get", "register"]
