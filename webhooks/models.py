import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from notices.choices import NoticeType

from .choices import DeliveryStatus, EndpointKind


class Endpoint(models.Model):
    """Where a project's notices are sent: a signed webhook, a Slack-compatible incoming webhook or
    email addresses, for the event types it subscribes to. The signing secret is stored encrypted;
    after a rotation the previous one still signs until ``previous_secret_expires_at``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="webhook_endpoints")
    kind = models.CharField(max_length=16, choices=EndpointKind.choices, default=EndpointKind.WEBHOOK)
    url = models.URLField(
        max_length=500, blank=True, default="", help_text="Where to POST, e.g. https://example.com/hooks/spark-ops."
    )
    email_to = models.CharField(
        max_length=500, blank=True, default="", help_text="For email: comma-separated addresses, e.g. ops@example.com."
    )
    event_types = models.JSONField(
        default=list, blank=True, help_text='Event types subscribed to, e.g. ["run.failed"]; empty: all of them.'
    )
    description = models.CharField(max_length=200, blank=True, default="", help_text='e.g. "Pager for failed runs".')
    enabled = models.BooleanField(default=True)
    secret_encrypted = models.TextField(editable=False)
    previous_secret_encrypted = models.TextField(blank=True, default="", editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    disabled_reason = models.CharField(max_length=500, blank=True, default="", editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # "The enabled endpoints of project P": read for every notice.
            models.Index(fields=["project", "enabled"], name="webhooks_endpoint_project")
        ]

    def __str__(self) -> str:
        return self.description or self.url or self.email_to

    def subscribes_to(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types

    def previous_secret_active(self) -> bool:
        expires = self.previous_secret_expires_at
        return bool(self.previous_secret_encrypted) and expires is not None and expires > timezone.now()


class Delivery(models.Model):
    """One notice (or a test) to send to one endpoint: an outbox row, written in the notice's
    transaction. Its id is the ``webhook-id`` a receiver dedupes by, the same on every attempt."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deliveries")
    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="+")
    notice = models.ForeignKey(
        "notices.Notice", null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries"
    )
    event_type = models.CharField(max_length=32, help_text=f"e.g. {NoticeType.RUN_FAILED.value}")
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "deliveries"
        indexes = [
            # The reaper's "pending deliveries due now", small: delivered rows leave it.
            models.Index(
                fields=["next_attempt_at"],
                name="webhooks_delivery_due",
                condition=models.Q(status=DeliveryStatus.PENDING),
            ),
            # An endpoint's deliveries, newest first (API and admin).
            models.Index(fields=["endpoint", "-created_at"], name="webhooks_delivery_endpoint"),
        ]
        constraints = [
            # A notice goes to an endpoint once; a redeliver reuses the row (and its webhook-id).
            models.UniqueConstraint(
                fields=["notice", "endpoint"],
                name="webhooks_delivery_once_per_endpoint",
                violation_error_message="This notice already has a delivery to this endpoint.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.event_type} -> {self.endpoint_id}"


class DeliveryAttempt(models.Model):
    """One try at sending a delivery: what came back, how fast."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveSmallIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True, help_text="None: no HTTP answer.")
    latency_ms = models.FloatField(null=True, blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True, default="")
    error = models.CharField(max_length=500, blank=True, default="")
    succeeded = models.BooleanField(default=False)
    attempted_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["delivery_id", "number"]

    def __str__(self) -> str:
        return f"{self.delivery_id} #{self.number}"
