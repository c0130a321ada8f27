"""How a delivery leaves: one channel per endpoint kind behind one small interface. Webhook and
Slack go through the guarded HTTP client (sparkops/lib/http.py: SSRF rules), email through
Django's email backend. A channel raises ChannelError when the receiver did not take it."""

import base64
import json
import secrets
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.mail import send_mail
from standardwebhooks.webhooks import Webhook

from sparkops.lib import http

from .choices import EndpointKind

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
EXCERPT = 500


@dataclass
class Message:
    """What one attempt sends: ``webhook_id`` is the delivery's id, the same on every attempt."""

    webhook_id: str
    event_type: str
    timestamp: datetime
    data: dict
    text: str  # the same, in words, for people (Slack, email)
    subject: str


@dataclass
class Outcome:
    status_code: int | None
    latency_ms: float | None
    excerpt: str = ""


class ChannelError(Exception):
    def __init__(self, message: str, outcome: Outcome | None = None):
        super().__init__(message)
        self.outcome = outcome or Outcome(None, None)


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 24 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def body_of(message: Message) -> bytes:
    """The Standard Webhooks envelope: type, timestamp, data."""
    envelope = {"type": message.event_type, "timestamp": message.timestamp.isoformat(), "data": message.data}
    return json.dumps(envelope, separators=(",", ":"), default=str).encode()


def signature_headers(message: Message, body: bytes, secrets_: list[str]) -> dict[str, str]:
    """webhook-id, webhook-timestamp and one ``v1,`` signature per secret, space-separated: during a
    rotation's overlap a receiver holding either secret verifies the message."""
    signatures = [Webhook(secret).sign(message.webhook_id, message.timestamp, body) for secret in secrets_]
    return {
        "webhook-id": message.webhook_id,
        "webhook-timestamp": str(int(message.timestamp.timestamp())),
        "webhook-signature": " ".join(signatures),
        "content-type": "application/json",
    }


def send_webhook(url: str, message: Message, secrets_: list[str]) -> Outcome:
    body = body_of(message)
    return _post(url, content=body, headers=signature_headers(message, body, secrets_))


def send_slack(url: str, message: Message) -> Outcome:
    return _post(url, content=json.dumps({"text": message.text}).encode(), headers={"content-type": "application/json"})


def send_email(addresses: list[str], message: Message) -> Outcome:
    try:
        send_mail(message.subject, message.text, settings.DEFAULT_FROM_EMAIL, addresses)
    except Exception as exc:
        raise ChannelError(f"{type(exc).__name__}: {exc}") from exc
    return Outcome(None, None, f"Sent to {', '.join(addresses)}.")


def _post(url: str, *, content: bytes, headers: dict) -> Outcome:
    try:
        # No redirects: a receiver that moved says so with a 3xx, recorded as a failure.
        response = http.request(
            "POST",
            url,
            content=content,
            headers=headers,
            timeout=settings.SPARKOPS_WEBHOOK_TIMEOUT_SECONDS,
            max_bytes=64 * 1024,
            max_redirects=0,
        )
    except http.OutboundError as exc:
        raise ChannelError(str(exc)) from exc
    outcome = Outcome(response.status_code, response.elapsed_ms, response.text[:EXCERPT])
    if not 200 <= response.status_code < 300:
        raise ChannelError(f"The receiver answered {response.status_code}.", outcome)
    return outcome


def send(kind: str, *, url: str, addresses: list[str], message: Message, secrets_: list[str]) -> Outcome:
    if kind == EndpointKind.SLACK:
        return send_slack(url, message)
    if kind == EndpointKind.EMAIL:
        return send_email(addresses, message)
    return send_webhook(url, message, secrets_)
