from django.db import models


class NoticeType(models.TextChoices):
    """What the outside is told about: the event types webhooks subscribe to and the live stream
    carries beside a run's own log."""

    RUN_SUCCEEDED = "run.succeeded", "Run succeeded"
    RUN_FAILED = "run.failed", "Run failed"
    RUN_CANCELLED = "run.cancelled", "Run cancelled"
    STEP_WAITING_APPROVAL = "step.waiting_approval", "Step waiting for approval"
    SCHEDULE_PAUSED = "schedule.paused", "Schedule paused"
    BUDGET_THRESHOLD = "budget.threshold", "Budget crossed a threshold"
    POLICY_BLOCKED = "policy.blocked", "Policy blocked"
