"""The outbox: deliveries written with their notice, signed per Standard Webhooks and verified by
the standardwebhooks library in a real local receiver; retries on the backoff schedule; auto-disable;
secret rotation with an overlap; SSRF refusal; Slack and email on the same outbox; redeliver and
the reaper."""

import json
from datetime import timedelta

import pytest
from django.core import mail
from django.db import transaction
from django.utils import timezone
from standardwebhooks.webhooks import WebhookVerificationError

from notices.choices import NoticeType
from notices.services import publish
from runs.tests.factories import make_workflow, start, stocked, tool_step
from sparkops.celery import app as celery_app
from webhooks import services
from webhooks.choices import MAX_ATTEMPTS, RETRY_DELAYS, DeliveryStatus, EndpointKind
from webhooks.models import Delivery, Endpoint

from .support import Receiver, make_endpoint


@pytest.fixture
def local(settings):
    """The receiver's address is allowed, as a developer allows a local server."""
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]


@pytest.fixture
def receiver(local):
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def failing(local):
    server = Receiver(statuses=(500,))
    yield server
    server.stop()


@pytest.fixture
def eager():
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


def notice(project, type_=NoticeType.RUN_FAILED, **payload):
    return publish(project.pk, type_, payload=payload or {"run": {"id": "r1"}})


def attempt(delivery: Delivery) -> Delivery:
    services.delivery_attempt(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    return delivery


# ------------------------------------------------------------------------------
# End to end: a failing run reaches the receiver, signed
# ------------------------------------------------------------------------------
def test_a_failed_run_reaches_the_receiver_signed_and_verifiable(engine, team, receiver):
    endpoint, secret = make_endpoint(team.project, receiver.url, event_types=[NoticeType.RUN_FAILED])
    project = stocked(team.project)

    run = start(make_workflow(project, tool_step("calc", "1/0"), schema={}), {})

    assert len(receiver.received) == 1
    message = receiver.received[0]
    envelope = message.verify(secret)
    assert (envelope["type"], envelope["data"]["run"]["id"], envelope["data"]["run"]["status"]) == (
        "run.failed",
        str(run.pk),
        "failed",
    )
    delivery = Delivery.objects.get()
    assert message.headers["webhook-id"] == str(delivery.pk)
    assert (delivery.endpoint_id, delivery.status, delivery.attempts, delivery.last_status_code) == (
        endpoint.pk,
        DeliveryStatus.SUCCEEDED,
        1,
        200,
    )
    logged = delivery.attempt_log.get()
    assert (logged.number, logged.status_code, logged.succeeded, logged.response_excerpt) == (
        1,
        200,
        True,
        '{"ok": true}',
    )
    assert logged.latency_ms > 0
    with pytest.raises(WebhookVerificationError):
        message.verify(services.channels.new_secret())  # another secret does not verify it


@pytest.mark.django_db
def test_a_delivery_is_written_with_its_notice_and_rolls_back_with_it(team):
    make_endpoint(team.project, "https://hooks.example.com/a")

    with pytest.raises(RuntimeError), transaction.atomic():  # noqa: PT012 - the rollback is what is tested
        notice(team.project)
        assert Delivery.objects.count() == 1
        raise RuntimeError

    assert Delivery.objects.count() == 0


@pytest.mark.django_db
def test_only_enabled_endpoints_subscribed_to_the_type_get_a_delivery(team):
    everything, _ = make_endpoint(team.project, "https://hooks.example.com/all")
    failures, _ = make_endpoint(team.project, "https://hooks.example.com/f", event_types=[NoticeType.RUN_FAILED])
    make_endpoint(team.project, "https://hooks.example.com/s", event_types=[NoticeType.RUN_SUCCEEDED])
    make_endpoint(team.project, "https://hooks.example.com/off", enabled=False)
    make_endpoint(team.other_project, "https://hooks.example.com/other")

    notice(team.project)

    assert set(Delivery.objects.values_list("endpoint_id", flat=True)) == {everything.pk, failures.pk}


# ------------------------------------------------------------------------------
# Retries, giving up, auto-disable
# ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_retries_follow_the_backoff_schedule_over_about_a_day_then_give_up(team, failing, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    make_endpoint(team.project, failing.url)
    delivery = Delivery.objects.get(pk=notice(team.project).deliveries.get().pk)
    first = timezone.now()

    gaps = []
    for number in range(1, MAX_ATTEMPTS + 1):
        delivery = attempt(delivery)
        assert delivery.attempts == number
        if delivery.next_attempt_at is None:
            break
        assert attempt(delivery).attempts == number  # not due yet: a second wake-up does nothing
        gaps.append(delivery.next_attempt_at - timezone.now())
        time_machine.move_to(delivery.next_attempt_at, tick=False)

    assert gaps == list(RETRY_DELAYS)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (DeliveryStatus.FAILED, 8, 500)
    assert timedelta(hours=23) < timezone.now() - first < timedelta(hours=24)
    assert len({r.headers["webhook-id"] for r in failing.received}) == 1  # the same id on every attempt
    assert list(delivery.attempt_log.values_list("number", "status_code")) == [(n, 500) for n in range(1, 9)]


@pytest.mark.django_db
def test_an_endpoint_is_disabled_after_n_failed_attempts_in_a_row_with_the_reason(team, failing, settings):
    settings.SPARKOPS_WEBHOOK_DISABLE_AFTER = 3
    endpoint, _ = make_endpoint(team.project, failing.url)
    for _ in range(3):
        attempt(notice(team.project).deliveries.get())

    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.consecutive_failures) == (False, 3)
    assert endpoint.disabled_reason == "Disabled after 3 failed attempts in a row; the last: The receiver answered 500."
    assert notice(team.project).deliveries.count() == 0  # a disabled endpoint gets nothing new

    endpoint.enabled = True
    services.endpoint_update(endpoint=endpoint)
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.consecutive_failures, endpoint.disabled_reason) == (True, 0, "")


@pytest.mark.django_db
def test_a_success_resets_the_count_of_failures_in_a_row(team, local, settings):
    settings.SPARKOPS_WEBHOOK_DISABLE_AFTER = 3
    flaky = Receiver(statuses=(500, 500, 204, 500, 500))
    try:
        endpoint, _ = make_endpoint(team.project, flaky.url)
        for _ in range(5):
            attempt(notice(team.project).deliveries.get())
    finally:
        flaky.stop()

    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.consecutive_failures) == (True, 2)


# ------------------------------------------------------------------------------
# Secrets
# ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_during_a_rotation_both_secrets_verify_and_after_the_overlap_only_the_new(team, receiver, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    endpoint, old = make_endpoint(team.project, receiver.url)
    new = services.secret_rotate(endpoint=endpoint, overlap=timedelta(hours=24))
    assert new != old
    assert new.startswith("whsec_")

    attempt(notice(team.project).deliveries.get())
    during = receiver.received[-1]
    assert during.verify(old)["type"] == "run.failed"
    assert during.verify(new)["type"] == "run.failed"
    assert len(during.headers["webhook-signature"].split(" ")) == 2

    time_machine.move_to(timezone.now() + timedelta(hours=25), tick=False)
    attempt(notice(team.project).deliveries.get())
    after = receiver.received[-1]
    assert after.verify(new)["type"] == "run.failed"
    with pytest.raises(WebhookVerificationError):
        after.verify(old)


@pytest.mark.django_db
def test_the_secret_is_stored_encrypted(team):
    endpoint, secret = make_endpoint(team.project, "https://hooks.example.com/a")
    stored = Endpoint.objects.values_list("secret_encrypted", flat=True).get(pk=endpoint.pk)
    assert secret not in stored
    assert services.signing_secrets(endpoint) == [secret]


# ------------------------------------------------------------------------------
# SSRF
# ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_private_address_is_refused_without_a_request_leaving(team, settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = []
    server = Receiver()
    try:
        make_endpoint(team.project, server.url)
        delivery = attempt(notice(team.project).deliveries.get())
    finally:
        server.stop()

    assert server.received == []
    assert delivery.status == DeliveryStatus.PENDING  # retried later, in case it was DNS
    assert "non-public address (127.0.0.1)" in delivery.last_error
    assert delivery.attempt_log.get().status_code is None


# ------------------------------------------------------------------------------
# Slack and email
# ------------------------------------------------------------------------------
def test_slack_gets_readable_text_with_a_link_to_the_run_in_the_admin(engine, team, receiver):
    make_endpoint(team.project, receiver.url, kind=EndpointKind.SLACK)
    project = stocked(team.project)

    run = start(make_workflow(project, tool_step("calc", "1/0"), slug="nightly", schema={}), {})

    body = json.loads(receiver.received[0].body)
    assert list(body) == ["text"]
    assert body["text"].startswith(f"Run failed: Nightly (run {run.pk}, $")
    assert f"http://localhost:8000/admin/runs/run/{run.pk}/change/" in body["text"]
    assert "webhook-signature" not in receiver.received[0].headers


@pytest.mark.django_db
def test_email_goes_out_through_the_django_email_backend(team):
    services.endpoint_create(
        endpoint=Endpoint(project=team.project, kind=EndpointKind.EMAIL, email_to="ops@example.com, lead@example.com")
    )
    delivery = attempt(
        notice(team.project, NoticeType.SCHEDULE_PAUSED, schedule={"name": "Digest"}, reason="x").deliveries.get()
    )

    assert delivery.status == DeliveryStatus.SUCCEEDED
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["ops@example.com", "lead@example.com"]
    assert mail.outbox[0].subject == "[Spark-Ops] Schedule paused: Digest: x"


# ------------------------------------------------------------------------------
# Redeliver and the reaper
# ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_redeliver_sends_again_from_the_first_attempt_with_the_same_webhook_id(team, receiver, eager):
    make_endpoint(team.project, receiver.url)
    delivery = attempt(notice(team.project).deliveries.get())

    with transaction.atomic():
        services.delivery_redeliver(delivery=delivery)
    services.deliveries_reap()  # on_commit does not run inside the test's transaction: the reaper does

    delivery.refresh_from_db()
    assert [r.headers["webhook-id"] for r in receiver.received] == [str(delivery.pk)] * 2
    assert (delivery.status, delivery.attempts, delivery.attempt_log.count()) == (DeliveryStatus.SUCCEEDED, 1, 2)


@pytest.mark.django_db
def test_the_reaper_sends_what_is_due_and_leaves_what_is_not(team, receiver, eager):
    make_endpoint(team.project, receiver.url)
    due = notice(team.project).deliveries.get()
    later = notice(team.project).deliveries.get()
    Delivery.objects.filter(pk=later.pk).update(next_attempt_at=timezone.now() + timedelta(minutes=5))

    assert services.deliveries_reap() == 1

    assert [r.headers["webhook-id"] for r in receiver.received] == [str(due.pk)]
    assert Delivery.objects.get(pk=later.pk).status == DeliveryStatus.PENDING


@pytest.mark.django_db(transaction=True)
def test_an_endpoint_deleted_during_the_call_drops_the_attempt_quietly(team, local):
    deleting = Receiver()
    try:
        endpoint, _ = make_endpoint(team.project, deleting.url)
        delivery = notice(team.project).deliveries.get()
        deleting.on_request = lambda: _delete_from_another_connection(endpoint)
        assert services.delivery_attempt(delivery_id=delivery.pk) is None
    finally:
        deleting.stop()

    assert len(deleting.received) == 1
    assert not Delivery.objects.filter(pk=delivery.pk).exists()


def _delete_from_another_connection(endpoint: Endpoint) -> None:
    from django.db import connection

    Endpoint.objects.filter(pk=endpoint.pk).delete()
    connection.close()  # the server thread's own connection
