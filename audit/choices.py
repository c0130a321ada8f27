"""Where a change came from and what it was."""

from django.db import models


class Channel(models.TextChoices):
    API = "api", "API"
    ADMIN = "admin", "Admin"
    COMMAND = "command", "Management command"
    SYSTEM = "system", "System (workers, beat)"


class Action(models.TextChoices):
    CREATE = "create", "Created"
    UPDATE = "update", "Updated"
    DELETE = "delete", "Deleted"
    REVOKE = "revoke", "Revoked"
    PAUSE = "pause", "Paused"
    RESUME = "resume", "Resumed"
    CANCEL = "cancel", "Cancelled a run"
    RETRY = "retry", "Retried a run"
    REPLAY = "replay", "Replayed a run"
    APPROVE = "approve", "Approved a step"
    REJECT = "reject", "Rejected a step"
    FREEZE = "freeze", "Froze a project"
    UNFREEZE = "unfreeze", "Unfroze a project"
