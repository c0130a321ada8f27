"""An approval rule: calls a human must let through, by the tool's risk class (and above), by
tool name, or by the call's estimated cost. Judged before each call; its usual action is
require_approval, decided by ``role`` (admin by default) or, for a global rule, by staff."""

from fnmatch import fnmatchcase

from agents.choices import RiskClass

from ..choices import PolicyKind
from ..money import config_usd, usd
from .base import CALL, Call, Objection, PolicyKindBase

_RISK_ORDER = list(RiskClass.values)


class Approval(PolicyKindBase):
    name = PolicyKind.APPROVAL.value
    label = "Approval rule"
    schema = {
        "type": "object",
        "properties": {
            "risk_class": {"enum": list(RiskClass.values)},
            "tools": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
            "min_cost_usd": {"type": "number", "minimum": 0},
            "role": {"enum": ["owner", "admin", "developer", "viewer"]},
        },
        "anyOf": [{"required": ["risk_class"]}, {"required": ["tools"]}, {"required": ["min_cost_usd"]}],
        "additionalProperties": False,
    }
    example = {"risk_class": "destructive", "role": "admin"}
    any_of_hint = "Give at least one of risk_class, tools or min_cost_usd."
    stages = frozenset({CALL})

    def judge(self, policy, call: Call) -> Objection | None:
        config = policy.config
        if call.tool is not None:
            risk = config.get("risk_class")
            if risk and _RISK_ORDER.index(call.tool.risk_class) >= _RISK_ORDER.index(risk):
                return Objection(
                    f"Tool {call.tool.slug!r} is {call.tool.risk_class}; {policy.name!r} covers {risk} and above."
                )
            if any(fnmatchcase(call.tool.slug, pattern) for pattern in config.get("tools", [])):
                return Objection(f"Tool {call.tool.slug!r} is named by {policy.name!r}.")
        minimum = config_usd(config, "min_cost_usd")
        priced = call.agent is not None and call.estimate_usd is not None
        if priced and minimum is not None and call.estimate_usd >= minimum:
            return Objection(
                f"The call may cost up to ${usd(call.estimate_usd)}; {policy.name!r} asks from ${usd(minimum)}."
            )
        return None

    def subject(self, policy, call: Call) -> str:
        return "cost"
