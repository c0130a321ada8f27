from sparkops.lib.errors import Refused

from .models import Policy


class PolicyRefused(Refused):
    """A policy refused to start a run: 429 for a rate limit (with Retry-After), 422 otherwise."""

    code = "policy_refused"

    def __init__(self, policy: Policy, reason: str, *, status_code: int = 422, retry_after: int | None = None):
        headers = {"Retry-After": str(retry_after)} if retry_after else {}
        super().__init__(
            reason,
            errors={"policy": [reason]},
            headers=headers,
            policy={"id": policy.pk, "name": policy.name, "kind": policy.kind, "action": policy.action},
        )
        self.status_code = status_code
        self.policy, self.reason, self.retry_after = policy, reason, retry_after
