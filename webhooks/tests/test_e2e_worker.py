"""End to end with real processes: a Celery worker killed with SIGKILL in the middle of sending a
delivery loses nothing; the reaper sends it again once the worker's claim has run out, and the
receiver gets it (at least once, with the same webhook-id, verifiable). A notice written while
Redis is down is delivered once Redis is back. Skipped unless DATABASE_URL and REDIS_URL are set
(CI sets both); the Redis test also needs redis-server on the PATH."""

import shutil
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.db import transaction

from notices.choices import NoticeType
from notices.services import publish
from runs.tests.e2e_support import ROOT, ThrowawayRedis, Worker, process_env
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


REAPER_LOOP = "import time\nfrom webhooks.tasks import reap\nwhile True:\n    reap()\n    time.sleep(1)\n"
PUBLISH = (
    "from django.db import transaction\nfrom notices.services import publish\n"
    "with transaction.atomic():\n    publish('{project}', 'run.failed', payload={{'run': {{'id': 'r2'}}}})\n"
)


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server for a Redis the test may kill")
def test_a_notice_written_while_redis_is_down_is_delivered_once_it_is_back(django_db_setup, tmp_path, settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    receiver = Receiver()
    redis = ThrowawayRedis(tmp_path).start()
    env = {**process_env(), "REDIS_URL": redis.url}
    team = make_team()
    _, secret = make_endpoint(team.project, receiver.url)
    worker = Worker(tmp_path / "worker.log", env={"REDIS_URL": redis.url}).start()
    reaper = subprocess.Popen(  # noqa: S603 - beat's webhooks-reap entry, every second
        [sys.executable, "manage.py", "shell", "-c", REAPER_LOOP], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
    )
    try:
        redis.kill()
        # A writer on the dead broker: its wake-up message is lost, the delivery row commits.
        subprocess.run(  # noqa: S603 - our own manage.py, fixed arguments
            [sys.executable, "manage.py", "shell", "-c", PUBLISH.format(project=team.project.pk)],
            cwd=ROOT, env=env, check=True, timeout=60, capture_output=True,
        )  # fmt: skip
        delivery = Delivery.objects.get(project=team.project)
        assert (delivery.status, delivery.attempts) == (DeliveryStatus.PENDING, 0)

        redis.start()  # empty, on the same port: the message is gone for good
        assert wait_for(lambda: Delivery.objects.get(pk=delivery.pk).status == DeliveryStatus.SUCCEEDED, 60), (
            worker.log_path.read_text()[-3000:]
        )
    finally:
        reaper.kill()
        reaper.wait(timeout=10)
        worker.stop()
        redis.stop()
        receiver.stop()

    assert [r.headers["webhook-id"] for r in receiver.received] == [str(delivery.pk)]
    assert receiver.received[0].verify(secret)["data"]["run"]["id"] == "r2"
