"""Tool executors, one module per tool kind, behind ``base.ToolExecutor`` and this registry."""

from .base import CallLimits, ToolError, ToolExecutor, ToolResult
from .builtin import BuiltinExecutor
from .http import HttpExecutor

_EXECUTORS: dict[str, ToolExecutor] = {e.kind: e for e in (HttpExecutor(), BuiltinExecutor())}


def get(kind: str) -> ToolExecutor:
    try:
        return _EXECUTORS[kind]
    except KeyError:
        raise ToolError(f"Unknown tool kind {kind!r}.", permanent=True) from None


__all__ = ["CallLimits", "ToolError", "ToolExecutor", "ToolResult", "get"]
