"""Worker and beat liveness in /health/ready: heartbeats in the cache, judged by age. The real
processes' tests (a worker and beat started, then stopped) need PostgreSQL and Redis."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from runs.tests.e2e_support import ROOT, Worker, process_env
from sparkops.celery import app as celery_app
from telemetry import liveness

from .test_tracing import e2e


@pytest.fixture(autouse=True)
def fresh(settings):
    settings.SPARKOPS_HEARTBEAT_SECONDS = 0.5
    liveness.forget()
    yield
    liveness.forget()


def test_states_follow_the_age_of_the_last_heartbeat():
    assert liveness.liveness() == {
        "worker": {"state": "unknown", "age_seconds": None, "detail": "no worker heartbeat recorded yet"},
        "beat": {"state": "unknown", "age_seconds": None, "detail": "no beat heartbeat recorded yet"},
    }
    for age, state in ((0.2, "ok"), (2.0, "late"), (10.0, "down")):
        from django.core.cache import cache

        cache.set(liveness.WORKER_KEY, {"at": time.time() - age, "who": "celery@w1"})
        liveness.forget()
        worker = liveness.liveness()["worker"]
        assert worker["state"] == state
        assert worker["age_seconds"] == pytest.approx(age, abs=0.2)
        assert worker["detail"] == "last heartbeat from celery@w1"


def test_a_down_cache_answers_unknown_quickly_and_once_per_period(settings):
    # A Redis nobody listens on: every read fails at connect.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5},
        }
    }
    started = time.monotonic()
    first = liveness.liveness()
    assert time.monotonic() - started < 2
    assert first["worker"]["state"] == first["beat"]["state"] == "unknown"
    assert first["worker"]["detail"].startswith("the cache could not be read")
    started = time.monotonic()
    assert liveness.liveness() == first  # remembered: a probe storm costs one failed read
    assert time.monotonic() - started < 0.05


@pytest.mark.django_db
def test_readiness_reports_the_processes_without_failing_on_them(client):
    response = client.get("/health/ready")
    assert response.status_code == 200  # no worker is running: reported, not fatal
    assert response.json()["processes"]["worker"]["state"] == "unknown"
    assert set(response.json()["processes"]) == {"worker", "beat"}


# ------------------------------------------------------------------------------
# Real processes
# ------------------------------------------------------------------------------
def _wait_state(name: str, states: set[str], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        liveness.forget()
        found = liveness.liveness()[name]
        if found["state"] in states:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{name} never became {states}: {found}")


@e2e
@pytest.mark.django_db(transaction=True)
def test_a_worker_is_ok_while_it_runs_then_down_once_stopped(client, tmp_path):
    celery_app.control.purge()
    worker = Worker(tmp_path / "worker.log", env={"SPARKOPS_HEARTBEAT_SECONDS": "0.5"}).start()
    try:
        alive = _wait_state("worker", {"ok"})
        assert alive["detail"].startswith("last heartbeat from celery@")
        liveness.forget()
        body = client.get("/health/ready").json()
        assert body["processes"]["worker"]["state"] == "ok"
    finally:
        worker.stop()
    # Late, then down (a slow warm shutdown may already take it past late: the ages are judged
    # by test_states_follow_the_age_of_the_last_heartbeat).
    gone = _wait_state("worker", {"down"}, timeout=20)
    assert gone["age_seconds"] >= 3  # past DOWN x 0.5 s, reported to the tenth: 3.04 s reads 3.0


@e2e
@pytest.mark.django_db(transaction=True)
def test_beat_is_ok_while_it_ticks_then_down_once_stopped(tmp_path):
    log_path: Path = tmp_path / "beat.log"
    env = {**process_env(), "SPARKOPS_HEARTBEAT_SECONDS": "0.5"}
    command = [sys.executable, "-m", "celery", "-A", "sparkops", "beat", "--max-interval", "1", "--loglevel=INFO"]
    with log_path.open("a") as log:
        beat = subprocess.Popen(  # noqa: S603 - our own beat, fixed arguments
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        try:
            _wait_state("beat", {"ok"}, timeout=60)
        except AssertionError:
            raise AssertionError(log_path.read_text()[-3000:]) from None
    finally:
        beat.terminate()
        beat.wait(timeout=20)
    assert _wait_state("beat", {"down"}, timeout=15)["state"] == "down"
