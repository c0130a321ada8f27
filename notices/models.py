from django.db import models

from .choices import NoticeType


class Notice(models.Model):
    """Something a project's outside world is told about (a run ended, a step waits for approval,
    a schedule paused, a budget crossed a threshold, a policy blocked), written in the same
    transaction as its cause. Webhook deliveries and the live stream are fed from here; its id
    orders a project's notices."""

    id = models.BigAutoField(primary_key=True)
    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="notices")
    type = models.CharField(max_length=32, choices=NoticeType.choices)
    run = models.ForeignKey("runs.Run", null=True, blank=True, on_delete=models.CASCADE, related_name="notices")
    step = models.ForeignKey("runs.RunStep", null=True, blank=True, on_delete=models.CASCADE, related_name="notices")
    schedule = models.ForeignKey(
        "schedules.Schedule", null=True, blank=True, on_delete=models.CASCADE, related_name="notices"
    )
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["project", "id"], name="notices_project_id")]

    def __str__(self) -> str:
        return f"{self.type} #{self.pk}"


class BudgetCrossing(models.Model):
    """A budget crossed 50, 80 or 100% of its amount in one window of one project: the claim that
    makes its ``budget.threshold`` notice go out once. Two workers reserving at once both see the
    budget past 80%; the unique constraint lets only the first one's row (and notice) commit."""

    policy = models.ForeignKey("policies.Policy", on_delete=models.CASCADE, related_name="+")
    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="+")
    window_start = models.DateTimeField(help_text="Start of the budget window the crossing happened in.")
    percent = models.PositiveSmallIntegerField(help_text="The threshold crossed, e.g. 80.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["policy", "project", "window_start", "percent"],
                name="notices_budget_crossing_once_per_window",
                violation_error_message="This threshold was already reported for this window.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.policy_id} {self.percent}% from {self.window_start:%Y-%m-%d}"
