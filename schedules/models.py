import uuid

from django.conf import settings
from django.db import models

from .choices import CatchupPolicy, FireOutcome, OverlapPolicy


class Schedule(models.Model):
    """Fires runs of a workflow from a cron expression in a timezone. Kept in step with exactly one
    django-celery-beat PeriodicTask (``schedule:<id>``) by schedules.services; never edit that task."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="schedules")
    workflow = models.ForeignKey("workflows.Workflow", on_delete=models.CASCADE, related_name="schedules")
    version = models.ForeignKey(
        "workflows.WorkflowVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="schedules",
        help_text="Pin a published version; empty runs the latest published version at each fire.",
    )
    name = models.CharField(max_length=200, help_text='e.g. "Nightly digest".')
    cron = models.CharField(
        max_length=100, help_text='Five fields: minute hour day month weekday, e.g. "0 9 * * mon-fri".'
    )
    timezone = models.CharField(max_length=64, default="UTC", help_text='IANA name, e.g. "Europe/Berlin".')
    inputs = models.JSONField(
        default=dict, blank=True, help_text="Inputs of every run, checked against the workflow's input schema."
    )
    enabled = models.BooleanField(default=True)
    overlap_policy = models.CharField(max_length=16, choices=OverlapPolicy.choices, default=OverlapPolicy.SKIP)
    max_active = models.PositiveSmallIntegerField(
        default=1, help_text="With allow_n: at most this many active runs, e.g. 3."
    )
    catchup_policy = models.CharField(max_length=20, choices=CatchupPolicy.choices, default=CatchupPolicy.SKIP_MISSED)
    catchup_window_seconds = models.PositiveIntegerField(
        default=3600, help_text="With latest_in_window: how late a fire may still start."
    )
    auto_pause_after = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Pause after this many failed runs in a row, e.g. 3."
    )
    jitter_seconds = models.PositiveIntegerField(
        default=0, help_text="Start each run up to this many seconds late, at random."
    )
    paused_reason = models.CharField(max_length=300, blank=True, default="")
    paused_by_freeze = models.BooleanField(
        default=False, editable=False, help_text="Paused by its project's freeze; the unfreeze resumes it."
    )
    last_fire_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Nominal time of the last slot handled."
    )
    next_fire_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        # The table (and its constraints' names) kept the runs_ prefix of the app it was born in:
        # moving the model here changed no row.
        db_table = "runs_schedule"
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "name"],
                name="runs_schedule_unique_name",
                violation_error_message="A schedule with this name already exists in the project.",
            ),
            models.CheckConstraint(
                condition=models.Q(max_active__gte=1),
                name="runs_schedule_max_active_positive",
                violation_error_message="max_active must be at least 1.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def periodic_task_name(self) -> str:
        return f"schedule:{self.pk}"


class ScheduleFire(models.Model):
    """One slot of a schedule and what became of it. Unique per (schedule, nominal time), so two
    beats or a redelivered message can never start two runs for one slot."""

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="fires")
    nominal_time = models.DateTimeField(help_text="The slot, in UTC.")
    outcome = models.CharField(max_length=20, choices=FireOutcome.choices)
    reason = models.CharField(max_length=500, blank=True, default="")
    manual = models.BooleanField(default=False, help_text="Started by /trigger, not by the clock.")
    run = models.OneToOneField(
        "runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="schedule_fire"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "runs_schedulefire"
        ordering = ["schedule_id", "-nominal_time"]
        constraints = [
            # Its index also serves "fires of schedule S, newest first".
            models.UniqueConstraint(fields=["schedule", "nominal_time"], name="runs_fire_unique_slot"),
        ]

    def __str__(self) -> str:
        return f"{self.schedule_id}@{self.nominal_time:%Y-%m-%d %H:%M} {self.outcome}"
