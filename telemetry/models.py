"""Hourly roll-ups of finished runs: what ``GET /api/v1/metrics`` and the dashboard's charts read
for sealed hours instead of scanning runs and steps (telemetry/rollups.py keeps them)."""

from django.db import models

from projects.models import Project
from runs.models import Run


class RunHourlyRollup(models.Model):
    """The finished runs (succeeded, failed, cancelled) of one project, workflow and status queued
    in one UTC hour, with their steps. A finished run never changes again, so a row stays true once
    written; active runs are never rolled up (they are read live). Kept when retention prunes the
    runs it counts: metrics of old windows come from here."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    hour = models.DateTimeField(help_text="Start of the UTC hour the runs were queued in.")
    # No foreign key: a deleted workflow's history still counts.
    workflow_id = models.UUIDField(null=True, blank=True)
    status = models.CharField(max_length=20)
    runs = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=6, default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    # Sparse log-scale histograms of finished_at - started_at: {bucket index: count}
    # (telemetry/histogram.py).
    run_durations = models.JSONField(default=dict, blank=True)
    step_durations = models.JSONField(default=dict, blank=True)

    class Meta:
        # One row per (project, hour, workflow, status): rollups.roll() deletes and writes whole
        # hours under the state row's lock, so no unique constraint is needed (a null workflow
        # would need NULLS NOT DISTINCT, which SQLite lacks).
        indexes = [models.Index(fields=["hour", "project"], name="telemetry_rollup_hour")]

    def __str__(self) -> str:
        return f"{self.project_id} {self.hour:%Y-%m-%d %H}:00 {self.status}: {self.runs}"


class RollupState(models.Model):
    """One row: the hours [rolled_from, rolled_until) have their rows. Those rows count every run of
    those hours except the pending ones (RollupPending), which readers add live."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    rolled_from = models.DateTimeField()
    rolled_until = models.DateTimeField()
    rolled_at = models.DateTimeField(help_text="When the last tick (or backfill) committed.")

    def __str__(self) -> str:
        return f"rolled {self.rolled_from:%Y-%m-%d %H}:00 to {self.rolled_until:%Y-%m-%d %H}:00"


class RollupPending(models.Model):
    """A run of a rolled hour that its rows do not count yet: it was still active when the hour was
    rolled. Readers read it live whatever its status now; the next tick after it finishes adds it
    to its hour's row and removes it from here."""

    run = models.OneToOneField(Run, on_delete=models.CASCADE, primary_key=True, related_name="+")
    hour = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["hour"], name="telemetry_pending_hour")]

    def __str__(self) -> str:
        return f"{self.run_id} ({self.hour:%Y-%m-%d %H}:00)"
