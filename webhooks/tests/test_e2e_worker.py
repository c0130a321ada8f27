"""End to end with real processes: a Celery worker killed with SIGKILL in the middle of sending a
delivery loses nothing; the reaper sends it again once the worker's claim has run out, and the
receiver gets it (at least once, with the same webhook-id, verifiable). Skipped unless
DATABASE_URL and REDIS_URL are set (CI sets both)."""

import time

import pytest
from django.conf import settings
from django.db import transaction

from notices.choices import NoticeType
from notices.services import publish
from runs.tests.e2e_support import Worker
from sparkops.celery import app as celery_app
from sparkops.testing import make_team
from webhooks import services
from webhooks.choices import DeliveryStatus
from webhooks.models import Delivery

from .support import Receiver, make_endpoint

pytestmark = [
    pytest.mark.skipif(
        not (settings.DATABASE_URL.startswith("postgres") and settings.REDIS_URL),
        reason="end-to-end runs need PostgreSQL and Redis (set DATABASE_URL and REDIS_URL)",
    ),
    pytest.mark.django_db(transaction=True),
]
CLAIM_SECONDS = 2


@pytest.fixture
def receiver(settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    server = Receiver(delays=(60,))  # the first request hangs: the worker is killed meanwhile
    yield server
    server.stop()


def start_worker(path) -> Worker:
    return Worker(path, env={"SPARKOPS_WEBHOOK_CLAIM_SECONDS": str(CLAIM_SECONDS)}).start()


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_a_delivery_survives_its_worker_killed_mid_send(django_db_setup, tmp_path, receiver):
    celery_app.control.purge()  # messages other tests left for rows that no longer exist
    team = make_team()
    endpoint, secret = make_endpoint(team.project, receiver.url)
    first = start_worker(tmp_path / "first.log")
    second = None
    try:
        with transaction.atomic():
            notice = publish(team.project.pk, NoticeType.RUN_FAILED, payload={"run": {"id": "r1"}})
        assert receiver.arrived.wait(30), first.log_path.read_text()[-3000:]
        first.kill()  # kill -9 mid-send: no ack, no outcome written

        delivery = Delivery.objects.get(notice=notice)
        assert (delivery.status, delivery.attempts, delivery.attempt_log.count()) == (DeliveryStatus.PENDING, 1, 0)

        second = start_worker(tmp_path / "second.log")
        time.sleep(CLAIM_SECONDS + 0.5)
        assert services.deliveries_reap() == 1  # what beat's webhooks-reap entry does every 30 s

        assert wait_for(lambda: Delivery.objects.get(pk=delivery.pk).status == DeliveryStatus.SUCCEEDED), (
            second.log_path.read_text()[-3000:]
        )
    finally:
        first.stop()
        if second is not None:
            second.stop()

    delivery.refresh_from_db()
    assert delivery.attempts == 2
    assert [r.headers["webhook-id"] for r in receiver.received] == [str(delivery.pk)] * 2
    assert {r.verify(secret)["data"]["notice"] for r in receiver.received} == {notice.pk}
    assert list(delivery.attempt_log.values_list("status_code", "succeeded")) == [(200, True)]
    assert endpoint.deliveries.count() == 1
