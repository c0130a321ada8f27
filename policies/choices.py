"""Policy kinds, actions and outcomes as named constants."""

from django.db import models


class PolicyKind(models.TextChoices):
    """The model's choices: the kinds registered in policies/kinds/, in the same order (a test
    holds them together). A new kind is a module there, a line here and a migration."""

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


class Stage(models.TextChoices):
    """Where a decision was taken; a run held for a concurrency slot is recorded at admission."""

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
