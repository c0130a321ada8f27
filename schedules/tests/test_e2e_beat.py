"""End to end: real celery beat processes (django-celery-beat's DatabaseScheduler) and a real
worker on the test database and Redis. A schedule made through the API fires at the minute and its
run completes; two beats at once start one run per slot; disabling through the API stops beat
without a restart. Skipped unless DATABASE_URL is PostgreSQL and REDIS_URL is set."""

import os
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from agents.models import Agent
from agents.services import agent_save
from runs.choices import RUN_TERMINAL, RunStatus, Trigger
from runs.models import Run
from runs.tests.e2e_support import ROOT, Worker, database_url
from schedules.choices import FireOutcome
from schedules.models import ScheduleFire
from sparkops.celery import app as celery_app
from sparkops.testing import make_team
from workflows.services import workflow_create

pytestmark = [
    pytest.mark.skipif(
        not (settings.DATABASE_URL.startswith("postgres") and settings.REDIS_URL),
        reason="beat end to end needs PostgreSQL and Redis (set DATABASE_URL and REDIS_URL)",
    ),
    pytest.mark.django_db(transaction=True),
]

MINUTE = timedelta(minutes=1)


class Beat:
    """``celery beat`` with the database scheduler, as its own process group, ticking every second
    so it notices schedule changes at once."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> "Beat":
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "sparkops.settings.test",
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL,
        }
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "sparkops",
            "beat",
            "-S",
            "django_celery_beat.schedulers:DatabaseScheduler",
            "--max-interval",
            "1",
            "--loglevel=INFO",
        ]
        log = self.log_path.open("a")
        self.process = subprocess.Popen(  # noqa: S603 - our own beat, fixed arguments
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "beat: Starting..." in self.log and PeriodicTask.objects.filter(name="runs-reap").exists():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"beat exited: {self.log[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"beat not ready: {self.log[-3000:]}")

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def sent(self, task_name: str) -> int:
        """How many times this beat sent the named periodic task."""
        return len(re.findall(rf"Sending due task {re.escape(task_name)} ", self.log))

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


@pytest.fixture
def stack(django_db_setup, tmp_path):
    """A worker and two beats, stopped whatever the test did."""
    celery_app.control.purge()  # messages other tests left for rows that no longer exist
    started = []
    try:
        started.append(Worker(tmp_path / "worker.log").start())
        beats = [Beat(tmp_path / f"beat-{n}.log").start() for n in (1, 2)]
        started.extend(beats)
        yield beats
    finally:
        for process in reversed(started):
            process.stop()


def wait_for(find, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := find()) is not None:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def sleep_until(moment) -> None:
    time.sleep(max((moment - timezone.now()).total_seconds(), 0))


def echo_workflow(project):
    agent_save(agent=Agent(project=project, slug="echo", name="Echo", provider="echo", model="echo-1"))
    return workflow_create(
        project=project,
        user=None,
        name="Minutely",
        slug="minutely",
        definition={"steps": [{"key": "say", "kind": "agent", "agent": "echo", "prompt": "tick {{ inputs.topic }}"}]},
        input_schema={"type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"]},
        publish=True,
    )


def test_two_beats_fire_a_schedule_once_per_slot_and_stop_when_it_is_disabled(stack):
    team = make_team()
    workflow = echo_workflow(team.project)
    admin = team.client("admin")
    if timezone.now().second >= 45:  # leave beat time to load the task before the minute turns
        sleep_until(timezone.now().replace(second=0, microsecond=0) + MINUTE + timedelta(seconds=1))
    body = {
        "project": str(team.project.pk),
        "workflow": str(workflow.pk),
        "name": "Every minute",
        "cron": "* * * * *",
        "timezone": "UTC",
        "overlap_policy": "allow",
        "inputs": {"topic": "e2e"},
    }
    created = admin.post("/api/v1/schedules", body)
    assert created.status_code == 201, created.json()
    schedule_id, task_name = created.json()["id"], f"schedule:{created.json()['id']}"
    slot = timezone.now().replace(second=0, microsecond=0) + MINUTE

    # The slot fires once, although both beats send it, and the echo run completes on the worker.
    fire = wait_for(
        lambda: ScheduleFire.objects.filter(schedule_id=schedule_id, outcome=FireOutcome.STARTED).first(),
        timeout=(slot - timezone.now()).total_seconds() + 20,
        what="the first fire",
    )
    assert fire.nominal_time == slot
    run = wait_for(
        lambda: Run.objects.filter(pk=fire.run_id, status__in=RUN_TERMINAL).first(), timeout=30, what="the run"
    )
    assert (run.status, run.trigger) == (RunStatus.SUCCEEDED, Trigger.SCHEDULE), run.error
    assert run.outputs["say"] == "echo: tick e2e"
    wait_for(lambda: all(beat.sent(task_name) for beat in stack) or None, timeout=10, what="both beats to send")

    # Disabled through the API: both beats see it without a restart, and the next minute is quiet.
    disabled = admin.patch(f"/api/v1/schedules/{schedule_id}", {"enabled": False})
    assert disabled.status_code == 200, disabled.json()
    sleep_until(slot + MINUTE + timedelta(seconds=8))

    assert [beat.sent(task_name) for beat in stack] == [1, 1]
    assert list(ScheduleFire.objects.filter(schedule_id=schedule_id).values_list("nominal_time", "outcome")) == [
        (slot, FireOutcome.STARTED)
    ]
    assert Run.objects.filter(workflow=workflow).count() == 1
    assert PeriodicTask.objects.get(name=task_name).enabled is False
    for beat in stack:
        assert "Traceback" not in beat.log, beat.log[-3000:]
