"""Run and step statuses as named constants, with their active and terminal groups and the
transitions the engine allows. Changing a status goes through runs.engine.transitions only."""

from django.db import models


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    WAITING_APPROVAL = "waiting_approval", "Waiting for approval"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLING = "cancelling", "Cancelling"
    CANCELLED = "cancelled", "Cancelled"


RUN_ACTIVE = frozenset({RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING_APPROVAL, RunStatus.CANCELLING})
RUN_TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
RUN_TRANSITIONS = {
    RunStatus.QUEUED: {RunStatus.RUNNING, RunStatus.CANCELLING, RunStatus.FAILED},
    RunStatus.RUNNING: {RunStatus.WAITING_APPROVAL, RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLING},
    RunStatus.WAITING_APPROVAL: {RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLING, RunStatus.SUCCEEDED},
    RunStatus.CANCELLING: {RunStatus.CANCELLED},
}


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    WAITING_APPROVAL = "waiting_approval", "Waiting for approval"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    CANCELLED = "cancelled", "Cancelled"


STEP_TERMINAL = frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED})


class Trigger(models.TextChoices):
    API = "api", "API"
    SCHEDULE = "schedule", "Schedule"
    RETRY = "retry", "Retry"
    REPLAY = "replay", "Replay"
    CLI = "cli", "Command line"
    ADMIN = "admin", "Admin"


class Decision(models.TextChoices):
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


class EventType(models.TextChoices):
    RUN_QUEUED = "run.queued"
    RUN_STARTED = "run.started"
    RUN_WAITING_APPROVAL = "run.waiting_approval"
    RUN_RESUMED = "run.resumed"
    RUN_SUCCEEDED = "run.succeeded"
    RUN_FAILED = "run.failed"
    RUN_CANCELLING = "run.cancelling"
    RUN_CANCELLED = "run.cancelled"
    STEP_QUEUED = "step.queued"
    STEP_STARTED = "step.started"
    STEP_OUTCOME_REFUSED = "step.outcome_refused"
    STEP_HANDED_BACK = "step.handed_back"
    STEP_RETRYING = "step.retrying"
    STEP_SUCCEEDED = "step.succeeded"
    STEP_FAILED = "step.failed"
    STEP_SKIPPED = "step.skipped"
    STEP_CANCELLED = "step.cancelled"
    STEP_REUSED = "step.reused"
    STEP_WAITING_APPROVAL = "step.waiting_approval"
    STEP_APPROVED = "step.approved"
    STEP_REJECTED = "step.rejected"
    LLM_CALL = "llm.call"
    TOOL_CALL = "tool.call"
    RUN_HELD = "run.held"
    POLICY_DECISION = "policy.decision"
