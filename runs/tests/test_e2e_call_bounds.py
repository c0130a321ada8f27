"""End to end: no call outlives its step. A real Celery worker, real Redis and PostgreSQL, and a
real local HTTP endpoint slower than the step's timeout. Skipped unless DATABASE_URL and
REDIS_URL are set (CI sets both)."""

import re
import time

import pytest
from django.conf import settings

from agents import services as agent_services
from agents.models import Tool
from agents.tests.provider_server import ProviderServer
from runs.choices import RUN_TERMINAL, RunStatus, StepStatus
from runs.engine import core
from runs.models import Run
from sparkops.celery import app as celery_app
from sparkops.testing import make_team

from .e2e_support import Worker, worker_logs
from .test_e2e_worker import publish, start

pytestmark = [
    pytest.mark.skipif(
        not (settings.DATABASE_URL.startswith("postgres") and settings.REDIS_URL),
        reason="end-to-end runs need PostgreSQL and Redis (set DATABASE_URL and REDIS_URL)",
    ),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def worker(django_db_setup, tmp_path):
    celery_app.control.purge()  # messages other tests left for rows that no longer exist
    started = Worker(tmp_path / "worker.log").start()
    yield started
    started.stop()


@pytest.fixture
def endpoint():
    server = ProviderServer().start()
    yield server
    server.stop()


def reap_until_finished(run_id, timeout: float) -> Run:
    """Run the reaper as the beat would (every 0.5 s here, not 30 s) until the run ends."""
    deadline = time.monotonic() + timeout
    while (run := Run.objects.get(pk=run_id)).status not in RUN_TERMINAL:
        assert time.monotonic() < deadline, list(run.steps.values_list("key", "status", "attempt"))
        core.reap()
        time.sleep(0.5)
    return run


def test_a_slow_http_tool_is_cut_at_the_step_timeout_and_sent_once(worker, endpoint):
    team = make_team()
    agent_services.tool_save(
        tool=Tool(
            project=team.project,
            slug="notify",
            name="Notify",
            kind="http",
            # The tool's own timeout (30 s) is far longer than the step's (2 s).
            config={"method": "POST", "url": endpoint.url + "/notify", "timeout": 30},
        )
    )
    endpoint.reply({"ok": True}, delay=6)
    endpoint.reply({"ok": True}, delay=6)  # what a second POST would get, if one came
    workflow = publish(
        team,
        "bounded",
        [
            {
                "key": "notify",
                "kind": "tool",
                "tool": "notify",
                "input": {"text": "hello"},
                "timeout_seconds": 2,
                "retry": {"attempts": 1},
            }
        ],
    )
    started = time.monotonic()
    # The worker's lease margin is 1 s: a step still running 3 s after its claim is taken over.
    run = reap_until_finished(start(team, workflow), timeout=30)
    elapsed = time.monotonic() - started
    time.sleep(4)  # past the endpoint's 6 s: a takeover would have posted again by now
    core.reap()
    time.sleep(1)

    step = run.steps.get()
    assert run.status == RunStatus.FAILED, worker_logs([worker])
    assert step.status == StepStatus.FAILED
    assert step.error["type"] == "Timeout", step.error
    assert step.attempt == 1
    assert elapsed < 6  # failed at the step's timeout, not when the endpoint answered
    assert len(endpoint.requests) == 1, [r.headers.get("idempotency-key") for r in endpoint.requests]
    key = endpoint.requests[0].headers["idempotency-key"]
    assert re.fullmatch(rf"{run.pk}:notify:1:1:[0-9a-f]{{16}}", key), key
