"""A worker killed (kill -9) in the middle of a task leaves its sandbox and the command running in
it; the reaper finds the sandbox idle and destroys it, command included. A real Celery worker on
PostgreSQL and Redis; skipped without them."""

import os
import time

from runs.tests import test_e2e_worker as e2e
from runs.tests.e2e_support import Worker
from sparkops.celery import app as celery_app
from sparkops.roles import Role
from sparkops.testing import make_team
from taskboard import services
from taskboard.choices import SandboxStatus
from taskboard.models import Sandbox

from .support import coder

pytestmark = e2e.pytestmark


def until(condition, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_sandbox_orphaned_by_a_killed_worker_is_destroyed_by_the_reaper(django_db_setup, tmp_path, settings):
    root = tmp_path / "sandboxes"
    settings.SPARKOPS_SANDBOX_ROOT = str(root)
    celery_app.control.purge()
    worker = Worker(tmp_path / "worker.log", env={"SPARKOPS_SANDBOX_ROOT": str(root)}).start()
    try:
        team = make_team()
        agent = coder(team.project)
        task, _ = services.task_start_for_agent(
            agent=agent,
            user=team.members[Role.DEVELOPER],
            title="Wait",
            description='[[tool:sandbox_exec {"command": "sleep 120"}]]',
        )
        until(lambda: Sandbox.objects.filter(task=task).exists(), what="the sandbox")
        sandbox = Sandbox.objects.get(task=task)
        pids = root / str(sandbox.pk) / "out" / "pids"
        until(pids.exists, what="the command to start")
        worker.kill()
    finally:
        worker.stop()
    command = int(pids.read_text().split()[0])
    sandbox.refresh_from_db()
    assert sandbox.status == SandboxStatus.BUSY  # as the dead worker left it
    assert running(command)  # the orphan: nothing of the dead worker will stop it

    settings.SPARKOPS_SANDBOX_IDLE_SECONDS = 0
    counts = services.sandboxes_reap()

    sandbox.refresh_from_db()
    assert counts["sandboxes"] == 1
    assert sandbox.status == SandboxStatus.DESTROYED
    assert not (root / str(sandbox.pk)).exists()
    until(lambda: not running(command), timeout=5, what="the command to be killed")
