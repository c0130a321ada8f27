"""Endpoint kinds, delivery statuses and the retry schedule, as named constants."""

from datetime import timedelta

from django.db import models


class EndpointKind(models.TextChoices):
    WEBHOOK = "webhook", "Webhook (signed JSON, Standard Webhooks)"
    SLACK = "slack", "Slack-compatible incoming webhook"
    EMAIL = "email", "Email"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending (due at next_attempt_at)"
    SUCCEEDED = "succeeded", "Delivered"
    FAILED = "failed", "Failed (gave up; redeliver to try again)"


#: The event type of a test delivery (POST /webhooks/{id}/test); never a notice.
TEST_EVENT = "webhook.test"

#: How long after each failed attempt the next one is due: the Standard Webhooks / Svix shape,
#: about 23.6 hours from the first attempt to the last (8 attempts).
RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=8),
    timedelta(hours=8),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
