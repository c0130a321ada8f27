"""Policy kinds, actions and outcomes as named constants."""

from django.db import models


class PolicyKind(models.TextChoices):
    BUDGET = "budget", "Budget"
    RUN_CEILING = "run_ceiling", "Per-run ceiling"
    RATE_LIMIT = "rate_limit", "Rate limit"
    CONCURRENCY = "concurrency", "Concurrency limit"
    MODEL_ALLOWLIST = "model_allowlist", "Model allow-list"
    TOOL_ALLOWLIST = "tool_allowlist", "Tool allow-list"
    APPROVAL = "approval", "Approval rule"


class PolicyAction(models.TextChoices):
    BLOCK = "block", "Block"
    WARN = "warn", "Warn and allow"
    REQUIRE_APPROVAL = "require_approval", "Wait for a human decision"


# What each kind may do. Run-level kinds act before a run exists, where there is no step to
# park; a concurrency limit's "block" holds extra runs in the queue.
ACTIONS_BY_KIND = {
    PolicyKind.BUDGET: {PolicyAction.BLOCK, PolicyAction.WARN, PolicyAction.REQUIRE_APPROVAL},
    PolicyKind.RUN_CEILING: {PolicyAction.BLOCK, PolicyAction.WARN, PolicyAction.REQUIRE_APPROVAL},
    PolicyKind.RATE_LIMIT: {PolicyAction.BLOCK, PolicyAction.WARN},
    PolicyKind.CONCURRENCY: {PolicyAction.BLOCK, PolicyAction.WARN},
    PolicyKind.MODEL_ALLOWLIST: {PolicyAction.BLOCK, PolicyAction.WARN, PolicyAction.REQUIRE_APPROVAL},
    PolicyKind.TOOL_ALLOWLIST: {PolicyAction.BLOCK, PolicyAction.WARN, PolicyAction.REQUIRE_APPROVAL},
    PolicyKind.APPROVAL: {PolicyAction.BLOCK, PolicyAction.WARN, PolicyAction.REQUIRE_APPROVAL},
}


class Stage(models.TextChoices):
    ADMISSION = "admission", "Run admission"
    CALL = "call", "Before a provider or tool call"


class Outcome(models.TextChoices):
    BLOCKED = "blocked", "Blocked"
    WARNED = "warned", "Allowed with a warning"
    QUEUED = "queued", "Held in the queue"
    APPROVAL_REQUIRED = "approval_required", "Waiting for a human decision"
    OVERRIDDEN = "overridden", "Allowed by a human decision"


class EntryStatus(models.TextChoices):
    RESERVED = "reserved", "Reserved (call in flight)"
    SETTLED = "settled", "Settled"
    EXPIRED = "expired", "Expired (worker lost; the estimate stays counted)"


class Window(models.TextChoices):
    DAY = "day", "Calendar day"
    WEEK = "week", "Calendar week (Monday first)"
    MONTH = "month", "Calendar month"
    ROLLING = "rolling", "Rolling N days"
