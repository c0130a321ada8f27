"""A tool allow-list: tool calls only to the tools it names (slug globs). Judged before each tool
call, in a run and in a tool's test run."""

from fnmatch import fnmatchcase

from ..choices import PolicyKind
from .base import CALL, Call, Objection, PolicyKindBase


class ToolAllowlist(PolicyKindBase):
    name = PolicyKind.TOOL_ALLOWLIST.value
    label = "Tool allow-list"
    schema = {
        "type": "object",
        "properties": {"tools": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}},
        "required": ["tools"],
        "additionalProperties": False,
    }
    example = {"tools": ["search", "calc"]}
    stages = frozenset({CALL})

    def judge(self, policy, call: Call) -> Objection | None:
        if call.tool is None or any(fnmatchcase(call.tool.slug, pattern) for pattern in policy.config["tools"]):
            return None
        return Objection(f"Tool {call.tool.slug!r} is not on the allow-list of {policy.name!r}.")
