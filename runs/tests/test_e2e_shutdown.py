"""End to end: a worker told to stop (SIGTERM to its main process, as compose and Kubernetes do)
lets a running step finish within its grace period, or stops it when the grace is over and hands
it back so another worker starts it at once, not after its lease. Real prefork workers, Redis,
PostgreSQL and a local OpenAI-compatible server; skipped otherwise."""

import signal
import subprocess
import time

import pytest
from django.conf import settings

from agents import services as agent_services
from agents.models import Agent, ProviderCredential
from runs import services as run_services
from runs.choices import RUN_TERMINAL, RunStatus, StepStatus
from runs.models import Run, RunStep
from sparkops.celery import app as celery_app
from sparkops.testing import make_team
from workflows import services as workflow_services

from .e2e_support import FakeOpenAI, Worker, stop_workers, worker_logs

pytestmark = [
    pytest.mark.skipif(
        not (settings.DATABASE_URL.startswith("postgres") and settings.REDIS_URL),
        reason="end-to-end runs need PostgreSQL and Redis (set DATABASE_URL and REDIS_URL)",
    ),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def fake():
    server = FakeOpenAI()
    yield server
    server.stop()


@pytest.fixture
def workers(django_db_setup):
    celery_app.control.purge()  # messages other tests left for rows that no longer exist
    started: list[Worker] = []
    yield started
    stop_workers(started)


def slow_run(fake, seconds: float) -> Run:
    team = make_team()
    project = team.project
    credential = ProviderCredential(project=project, name="local", provider="openai", base_url=fake.base_url)
    agent_services.credential_save(credential=credential, secret="sk-local")
    agent = Agent(
        project=project, slug="smart", name="Smart", provider="openai", model="gpt-4o-mini", credential=credential
    )
    agent_services.agent_save(agent=agent)
    workflow = workflow_services.workflow_create(
        project=project,
        user=None,
        name="Slow",
        slug="slow",
        definition={"steps": [{"key": "call", "kind": "agent", "agent": "smart", "prompt": f"SLOW={seconds}"}]},
        publish=True,
    )
    run, _ = run_services.run_start(workflow=workflow)
    return run


def wait_until(check, timeout: float, what: str, workers: list[Worker]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{worker_logs(workers)}")


def start_worker(workers: list[Worker], tmp_path, grace: float) -> Worker:
    env = {"SPARKOPS_WORKER_STOP_GRACE_SECONDS": str(grace)}
    worker = Worker(tmp_path / f"worker-{len(workers)}.log", env=env).start()
    workers.append(worker)
    return worker


def terminate(worker: Worker) -> float:
    """SIGTERM to the main process only, as a container runtime sends it; when it was sent."""
    worker.process.send_signal(signal.SIGTERM)
    return time.monotonic()


def test_a_step_that_ends_within_the_grace_finishes_on_the_stopping_worker(fake, workers, tmp_path):
    worker = start_worker(workers, tmp_path, grace=20)
    run = slow_run(fake, 3)
    wait_until(lambda: RunStep.objects.filter(run=run, status=StepStatus.RUNNING).exists(), 30, "the step", workers)

    sent = terminate(worker)
    worker.process.wait(timeout=20)
    stopped_after = time.monotonic() - sent

    run.refresh_from_db()
    step = run.steps.get()
    assert run.status == RunStatus.SUCCEEDED, worker_logs(workers)
    assert (step.status, step.attempt) == (StepStatus.SUCCEEDED, 1)
    assert fake.prompts["SLOW=3"] == 1
    assert stopped_after < 10  # it waited for the step, not for the grace


def test_a_step_still_running_when_the_grace_ends_is_handed_back_and_rerun_at_once(fake, workers, tmp_path):
    worker = start_worker(workers, tmp_path, grace=3)
    run = slow_run(fake, 15)  # default timeout 300 s: the lease would keep it for 5 minutes
    wait_until(lambda: RunStep.objects.filter(run=run, status=StepStatus.RUNNING).exists(), 30, "the step", workers)

    sent = terminate(worker)
    try:
        worker.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the worker did not stop after its grace\n{worker_logs(workers)}") from None
    stopped_after = time.monotonic() - sent
    start_worker(workers, tmp_path, grace=3)  # the replacement a deploy starts

    done = wait_until(
        lambda: Run.objects.filter(pk=run.pk, status__in=RUN_TERMINAL).first(), 60, "the run to finish", workers
    )
    step = done.steps.get()
    assert done.status == RunStatus.SUCCEEDED, worker_logs(workers)
    assert 3 <= stopped_after < 10
    assert (step.status, step.attempt) == (StepStatus.SUCCEEDED, 2)  # cut once, run again from the start
    assert fake.prompts["SLOW=15"] == 2
    assert time.monotonic() - sent < 60  # not the 301 s lease
