"""Webhook endpoints and the delivery outbox.

A notice's deliveries are written in the notice's transaction (receivers.py), one per enabled
endpoint subscribed to its type, and a worker is woken on commit. ``delivery_attempt`` claims a
due delivery with a conditional UPDATE that also pushes its due time past the call, sends it,
and records the attempt. A lost message, a worker killed mid-send or a down broker leave the row
pending: the reaper (``deliveries_reap``, on beat) sends what is due. Delivery is at least once;
receivers dedupe by ``webhook-id`` (the delivery's id, the same on every attempt)."""

import logging
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from notices.choices import NoticeType
from notices.models import Notice
from runs.engine.dispatch import publish
from sparkops.lib import crypto
from sparkops.lib.errors import Conflict

from . import channels
from .choices import MAX_ATTEMPTS, RETRY_DELAYS, TEST_EVENT, DeliveryStatus, EndpointKind
from .models import Delivery, DeliveryAttempt, Endpoint

log = logging.getLogger(__name__)

DELIVER = "webhooks.deliver"
#: A retry due sooner than this is sent with a countdown; later ones are left to the reaper
#: (a broker holding a message for hours may redeliver it, or lose it with Redis).
COUNTDOWN_LIMIT = timedelta(minutes=5)
REAP_BATCH = 500


# ------------------------------------------------------------------------------
# Endpoints
# ------------------------------------------------------------------------------
def endpoint_errors(endpoint: Endpoint) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if endpoint.kind == EndpointKind.EMAIL:
        if not addresses_of(endpoint):
            errors["email_to"] = ["An email endpoint needs at least one address, e.g. ops@example.com."]
        for address in addresses_of(endpoint):
            try:
                validate_email(address)
            except ValidationError:
                errors.setdefault("email_to", []).append(f"{address!r} is not an email address.")
    elif not endpoint.url:
        errors["url"] = [f"A {endpoint.kind} endpoint needs a URL, e.g. https://example.com/hooks."]
    elif not endpoint.url.startswith(("https://", "http://")):
        errors["url"] = ["Only http and https URLs."]
    unknown = [t for t in endpoint.event_types or [] if t not in NoticeType.values]
    if not isinstance(endpoint.event_types, list) or unknown:
        errors["event_types"] = [f"Unknown event types {unknown}; choose from {NoticeType.values}."]
    return errors


def addresses_of(endpoint: Endpoint) -> list[str]:
    return [a.strip() for a in endpoint.email_to.split(",") if a.strip()]


def _validate(endpoint: Endpoint) -> None:
    if errors := endpoint_errors(endpoint):
        raise ValidationError(errors)
    endpoint.full_clean(exclude=["secret_encrypted"])


def endpoint_create(*, endpoint: Endpoint) -> tuple[Endpoint, str]:
    """Save a new endpoint with a fresh signing secret; returns it with the secret, shown once."""
    secret = channels.new_secret()
    endpoint.secret_encrypted = crypto.encrypt(secret)
    _validate(endpoint)
    endpoint.save()
    return endpoint, secret


def endpoint_update(*, endpoint: Endpoint) -> Endpoint:
    """Save an edit. Enabling an endpoint again clears its failure count and disabled reason."""
    _validate(endpoint)
    if endpoint.enabled:
        endpoint.consecutive_failures, endpoint.disabled_reason = 0, ""
    endpoint.save()
    return endpoint


def secret_rotate(*, endpoint: Endpoint, overlap: timedelta) -> str:
    """A new secret signs from now on; the current one also signs until ``overlap`` has passed, so
    receivers can switch without missing a message. Returns the new secret, shown once."""
    secret = channels.new_secret()
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted if overlap else ""
    endpoint.previous_secret_expires_at = timezone.now() + overlap if overlap else None
    endpoint.secret_encrypted = crypto.encrypt(secret)
    endpoint.save(update_fields=["secret_encrypted", "previous_secret_encrypted", "previous_secret_expires_at"])
    return secret


def signing_secrets(endpoint: Endpoint) -> list[str]:
    current = [crypto.decrypt(endpoint.secret_encrypted)]
    if endpoint.previous_secret_active():
        current.append(crypto.decrypt(endpoint.previous_secret_encrypted))
    return current


# ------------------------------------------------------------------------------
# The outbox
# ------------------------------------------------------------------------------
def deliveries_for_notice(*, notice: Notice) -> list[Delivery]:
    """Write the notice's deliveries in its transaction and wake a worker for each on commit."""
    endpoints = Endpoint.objects.filter(project_id=notice.project_id, enabled=True)
    rows = [
        Delivery(endpoint=endpoint, project_id=notice.project_id, notice=notice, event_type=notice.type)
        for endpoint in endpoints
        if endpoint.subscribes_to(notice.type)
    ]
    if rows:
        Delivery.objects.bulk_create(rows)
        ids = [str(row.pk) for row in rows]
        transaction.on_commit(lambda: [publish(DELIVER, [pk]) for pk in ids])
    return rows


def delivery_redeliver(*, delivery: Delivery) -> Delivery:
    """Send again from the first attempt, with the same webhook-id (receivers may dedupe it)."""
    if not delivery.endpoint.enabled:
        raise Conflict("The endpoint is disabled; enable it first.")
    Delivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=timezone.now(), delivered_at=None
    )
    transaction.on_commit(lambda: publish(DELIVER, [str(delivery.pk)]))
    delivery.refresh_from_db()
    return delivery


def deliveries_reap(*, now=None, batch: int = REAP_BATCH) -> int:
    """Wake a worker for each pending delivery that is due: its message was lost, its worker died
    mid-send (the claim ran out), or its retry's time came. Returns how many."""
    now = now or timezone.now()
    due = list(
        Delivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:batch]
    )
    for pk in due:
        publish(DELIVER, [str(pk)])
    return len(due)


# ------------------------------------------------------------------------------
# One attempt
# ------------------------------------------------------------------------------
def delivery_attempt(*, delivery_id) -> DeliveryAttempt | None:
    """Claim the delivery if it is due, send it once, record what happened. Safe to run twice:
    a second run finds nothing due and returns None."""
    delivery = _claim(delivery_id)
    if delivery is None:
        return None
    endpoint = delivery.endpoint
    if not endpoint.enabled and delivery.event_type != TEST_EVENT:
        return _record(delivery, channels.Outcome(None, None), f"The endpoint is disabled. {endpoint.disabled_reason}")
    try:
        outcome = _send(delivery)
    except channels.ChannelError as exc:
        return _record(delivery, exc.outcome, str(exc))
    except crypto.DecryptionError as exc:
        return _record(delivery, channels.Outcome(None, None), str(exc))
    return _record(delivery, outcome, "")


def _claim(delivery_id) -> Delivery | None:
    # Two workers woken for one delivery (the on-commit message and the reaper): the UPDATE lets
    # one through. Pushing the due time past the call is the lease: if this worker dies mid-send,
    # the row is due again SPARKOPS_WEBHOOK_CLAIM_SECONDS later and the reaper sends it.
    now = timezone.now()
    lease = timedelta(seconds=settings.SPARKOPS_WEBHOOK_CLAIM_SECONDS)
    claimed = Delivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now).update(
        attempts=F("attempts") + 1, next_attempt_at=now + lease
    )
    if not claimed:
        return None
    return Delivery.objects.select_related("endpoint", "notice").filter(pk=delivery_id).first()  # None: deleted


def _send(delivery: Delivery) -> channels.Outcome:
    endpoint = delivery.endpoint
    return channels.send(
        endpoint.kind,
        url=endpoint.url,
        addresses=addresses_of(endpoint),
        message=message_for(delivery),
        secrets_=signing_secrets(endpoint) if endpoint.kind == EndpointKind.WEBHOOK else [],
    )


@transaction.atomic
def _record(delivery: Delivery, outcome: channels.Outcome, error: str) -> DeliveryAttempt | None:
    # Locked: an endpoint deleted during the call takes its deliveries with it; the attempt is
    # then dropped instead of failing on a row that no longer exists.
    if not Delivery.objects.select_for_update().filter(pk=delivery.pk).exists():
        return None
    attempt = DeliveryAttempt.objects.create(
        delivery=delivery,
        number=delivery.attempt_log.count() + 1,
        status_code=outcome.status_code,
        latency_ms=outcome.latency_ms,
        response_excerpt=outcome.excerpt[:500],
        error=error[:500],
        succeeded=not error,
    )
    fields = {"last_status_code": outcome.status_code, "last_error": error[:500]}
    if not error:
        fields.update(status=DeliveryStatus.SUCCEEDED, delivered_at=attempt.attempted_at, next_attempt_at=None)
    elif delivery.attempts >= _attempts_allowed(delivery) or not delivery.endpoint.enabled:
        fields.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
    else:
        delay = RETRY_DELAYS[delivery.attempts - 1]
        fields["next_attempt_at"] = attempt.attempted_at + delay
        if delay <= COUNTDOWN_LIMIT:
            transaction.on_commit(lambda: publish(DELIVER, [str(delivery.pk)], countdown=delay.total_seconds()))
    Delivery.objects.filter(pk=delivery.pk).update(**fields)
    if delivery.event_type != TEST_EVENT and delivery.endpoint.enabled:
        _count(delivery.endpoint, failed=bool(error), error=error)
    return attempt


def _attempts_allowed(delivery: Delivery) -> int:
    return 1 if delivery.event_type == TEST_EVENT else MAX_ATTEMPTS


def _count(endpoint: Endpoint, *, failed: bool, error: str) -> None:
    """Failed attempts in a row, across deliveries; past the limit the endpoint is disabled."""
    if not failed:
        Endpoint.objects.filter(pk=endpoint.pk).exclude(consecutive_failures=0).update(consecutive_failures=0)
        return
    Endpoint.objects.filter(pk=endpoint.pk).update(consecutive_failures=F("consecutive_failures") + 1)
    limit = settings.SPARKOPS_WEBHOOK_DISABLE_AFTER
    reason = f"Disabled after {limit} failed attempts in a row; the last: {error}"[:500]
    # Conditional: of two workers failing at once, the one that reaches the limit disables it.
    disabled = Endpoint.objects.filter(pk=endpoint.pk, enabled=True, consecutive_failures__gte=limit).update(
        enabled=False, disabled_reason=reason, updated_at=timezone.now()
    )
    if disabled:
        log.warning("webhook endpoint %s disabled: %s", endpoint.pk, reason)


# ------------------------------------------------------------------------------
# Tests and messages
# ------------------------------------------------------------------------------
def endpoint_test(*, endpoint: Endpoint) -> Delivery:
    """Send a ``webhook.test`` message now, once, and return its delivery with the attempt logged.
    It does not count towards disabling the endpoint."""
    delivery = Delivery.objects.create(endpoint=endpoint, project_id=endpoint.project_id, event_type=TEST_EVENT)
    delivery_attempt(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    return delivery


def message_for(delivery: Delivery) -> channels.Message:
    notice = delivery.notice
    if notice is None:
        data = {"endpoint": str(delivery.endpoint_id), "project": str(delivery.project_id)}
        text = "Spark-Ops test message: this endpoint receives notices."
        return channels.Message(str(delivery.pk), TEST_EVENT, delivery.created_at, data, text, "[Spark-Ops] Test")
    data = {"notice": notice.pk, "project": str(notice.project_id), **notice.payload}
    summary = describe(notice)
    link = (notice.payload.get("links") or {}).get("admin", "")
    text = f"{summary}\n{link}" if link else summary
    return channels.Message(str(delivery.pk), notice.type, notice.created_at, data, text, f"[Spark-Ops] {summary}")


def describe(notice: Notice) -> str:
    """One readable line for people: Slack text and the email subject."""
    payload = notice.payload
    run = payload.get("run") or {}
    workflow = (run.get("workflow") or {}).get("name") or (run.get("workflow") or {}).get("slug", "")
    label = NoticeType(notice.type).label
    if notice.type in (NoticeType.RUN_SUCCEEDED, NoticeType.RUN_FAILED, NoticeType.RUN_CANCELLED):
        return f"{label}: {workflow} (run {run.get('id')}, ${run.get('cost_usd')})"
    if notice.type == NoticeType.STEP_WAITING_APPROVAL:
        return f"{label}: step {payload.get('step', {}).get('key')} of {workflow} (run {run.get('id')})"
    if notice.type == NoticeType.POLICY_BLOCKED:
        return f"{label}: {payload.get('policy', {}).get('name')}: {payload.get('policy', {}).get('reason')}"
    if notice.type == NoticeType.SCHEDULE_PAUSED:
        return f"{label}: {payload.get('schedule', {}).get('name')}: {payload.get('reason') or 'paused'}"
    if notice.type == NoticeType.BUDGET_THRESHOLD:
        policy, percent = payload.get("policy", {}).get("name"), payload.get("threshold_percent")
        return f"{label}: {policy} at {percent}% (${payload.get('used_usd')} of ${payload.get('amount_usd')})"
    return label
