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
