"""A per-run ceiling: the most one run may spend, in dollars, tokens or both. Checked before each
provider call, with the call's estimated maximum reserved against the run."""

from ..choices import PolicyKind
from ..money import config_usd, usd
from ..selectors import run_use
from .base import _USD, CALL, Call, Objection, PolicyKindBase


class RunCeiling(PolicyKindBase):
    name = PolicyKind.RUN_CEILING.value
    label = "Per-run ceiling"
    schema = {
        "type": "object",
        "properties": {"max_usd": _USD, "max_tokens": {"type": "integer", "minimum": 1}},
        "anyOf": [{"required": ["max_usd"]}, {"required": ["max_tokens"]}],
        "additionalProperties": False,
    }
    example = {"max_usd": 0.5, "max_tokens": 200000}
    any_of_hint = "Give max_usd, max_tokens or both."
    stages = frozenset({CALL})
    reserves = True
    per_run = True

    def judge(self, policy, call: Call) -> Objection | None:
        used_usd, tokens = run_use(call.run_id)
        max_usd, max_tokens = config_usd(policy.config, "max_usd"), policy.config.get("max_tokens")
        if max_usd is not None and call.estimate_usd is not None and used_usd + call.estimate_usd > max_usd:
            return Objection(
                f"Run ceiling {policy.name!r}: the run has used ${usd(used_usd)} of ${usd(max_usd)}; "
                f"this call may cost ${usd(call.estimate_usd)}."
            )
        if max_tokens is not None and tokens + call.estimate_tokens > max_tokens:
            return Objection(
                f"Run ceiling {policy.name!r}: the run has used {tokens} of {max_tokens} tokens; "
                f"this call may use {call.estimate_tokens}."
            )
        return None

    def covers(self, policy, call: Call) -> bool:
        return True

    def keeps_dollars(self, policy) -> bool:
        return policy.config.get("max_usd") is not None

    def subject(self, policy, call: Call) -> str:
        return "spend"
