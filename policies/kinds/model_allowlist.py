"""A model allow-list: provider calls only to the models it names (globs, ``provider/model`` or
a bare model name). Judged before each provider call."""

from ..choices import PolicyKind
from ..selectors import model_matches
from .base import CALL, Call, Objection, PolicyKindBase


class ModelAllowlist(PolicyKindBase):
    name = PolicyKind.MODEL_ALLOWLIST.value
    label = "Model allow-list"
    schema = {
        "type": "object",
        "properties": {"models": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}},
        "required": ["models"],
        "additionalProperties": False,
    }
    example = {"models": ["openai/gpt-4o-mini", "anthropic/*"]}
    stages = frozenset({CALL})

    def judge(self, policy, call: Call) -> Objection | None:
        if call.agent is None:
            return None
        if any(model_matches(pattern, call.provider, call.model) for pattern in policy.config["models"]):
            return None
        return Objection(f"Model {call.provider}/{call.model} is not on the allow-list of {policy.name!r}.")
