"""What a schedule does when its runs overlap or its slots were missed, and what became of each
slot (the fire ledger)."""

from django.db import models


class OverlapPolicy(models.TextChoices):
    ALLOW = "allow", "Always start"
    SKIP = "skip", "Skip while a run of this schedule is active"
    BUFFER_ONE = "buffer_one", "Start one more when the active run ends"
    ALLOW_N = "allow_n", "Allow up to N active runs"


class CatchupPolicy(models.TextChoices):
    SKIP_MISSED = "skip_missed", "Skip missed fires"
    LATEST_IN_WINDOW = "latest_in_window", "Fire once for the latest missed slot within the window"


class FireOutcome(models.TextChoices):
    STARTED = "started", "Started a run"
    BUFFERED = "buffered", "Waiting for the active run to end"
    SKIPPED_OVERLAP = "skipped_overlap", "Skipped: a run is still active"
    SKIPPED_LATE = "skipped_late", "Skipped: too late"
    SKIPPED_PAUSED = "skipped_paused", "Skipped: schedule paused"
    FAILED = "failed", "Failed to start"
    BLOCKED = "blocked", "Refused by a policy"
