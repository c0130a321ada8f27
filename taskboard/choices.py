from django.db import models


class TaskStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    IN_PROGRESS = "in_progress", "In progress"
    REVIEW = "review", "In review (a pull request is open)"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


TASK_ACTIVE = frozenset({TaskStatus.PENDING, TaskStatus.IN_PROGRESS})
TASK_ENDED = frozenset({TaskStatus.REVIEW, TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELLED})


class TaskPriority(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"
    URGENT = "urgent", "Urgent"


#: The run priority each task priority starts with (admission orders queued runs by it).
RUN_PRIORITY = {TaskPriority.LOW: -10, TaskPriority.MEDIUM: 0, TaskPriority.HIGH: 10, TaskPriority.URGENT: 20}


class SandboxStatus(models.TextChoices):
    CREATING = "creating", "Creating"
    READY = "ready", "Ready"
    BUSY = "busy", "Busy"
    STOPPING = "stopping", "Stopping"
    DESTROYED = "destroyed", "Destroyed"
    FAILED = "failed", "Failed"


#: Sandboxes that may hold something outside the database (a directory, a cloud VM).
SANDBOX_LIVE = frozenset({SandboxStatus.CREATING, SandboxStatus.READY, SandboxStatus.BUSY, SandboxStatus.STOPPING})


class GitOperationKind(models.TextChoices):
    CLONE = "clone", "Clone"
    CHECKOUT_BRANCH = "checkout_branch", "Check out a new branch"
    COMMIT = "commit", "Commit"
    PUSH = "push", "Push"
    OPEN_PR = "open_pr", "Open a pull request"


class GitOperationStatus(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
