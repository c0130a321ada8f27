"""A rate limit: at most N runs started per minute or hour, for the project or per API key.
Judged at admission, over the times runs passes in (Admission.runs_started)."""

from datetime import timedelta

from django.utils import timezone

from ..choices import PolicyKind
from .base import ADMISSION, RUN_ACTIONS, Admission, Objection, PolicyKindBase

_PERIOD = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1)}


class RateLimit(PolicyKindBase):
    name = PolicyKind.RATE_LIMIT.value
    label = "Rate limit"
    schema = {
        "type": "object",
        "properties": {
            "max_runs": {"type": "integer", "minimum": 1},
            "per": {"enum": ["minute", "hour"]},
            "scope": {"enum": ["project", "api_key"]},
        },
        "required": ["max_runs", "per"],
        "additionalProperties": False,
    }
    example = {"max_runs": 60, "per": "minute", "scope": "project"}
    actions = RUN_ACTIONS
    stages = frozenset({ADMISSION})

    def judge(self, policy, admission: Admission) -> Objection | None:
        config = policy.config
        per_key = config.get("scope") == "api_key"
        if per_key and admission.api_key is None:
            return None  # a per-key limit does not count people in the frontend
        period = _PERIOD[config["per"]]
        started = admission.runs_started(timezone.now() - period, admission.api_key if per_key else None)
        count = started.count()
        if count < config["max_runs"]:
            return None
        # A new run fits once enough of the window's runs have aged out of it: with a limit lowered
        # since, more than one must.
        oldest_to_leave = started[count - config["max_runs"]]
        retry_after = max(1, int((oldest_to_leave + period - timezone.now()).total_seconds()) + 1)
        who = "this API key" if per_key else "the project"
        reason = (
            f"Rate limit {policy.name!r}: {who} started {count} runs in the last {config['per']}; "
            f"the limit is {config['max_runs']}."
        )
        return Objection(reason, status_code=429, retry_after=retry_after)
