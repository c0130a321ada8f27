"""End to end: Redis (broker and cache) killed and frozen while clients create runs through a
real web server. Dispatch goes through the database: no 5xx, a bounded answer, every run finishes
once Redis is back (the reaper re-sends what was not sent), every step runs once.

Needs PostgreSQL, the shared Redis (skipped otherwise, like the other end-to-end tests) and
``redis-server`` on the PATH for the throwaway Redis that the test kills."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from django.conf import settings

from accounts import services as account_services
from agents import services as agent_services
from agents.models import Agent, ProviderCredential
from runs.choices import RUN_TERMINAL, RunStatus, StepStatus
from runs.models import Run, RunStep
from sparkops.roles import Role
from sparkops.testing import make_team
from workflows import services as workflow_services

from .e2e_support import ROOT, FakeOpenAI, ThrowawayRedis, Worker, free_port, process_env

pytestmark = [
    pytest.mark.skipif(
        not (settings.DATABASE_URL.startswith("postgres") and settings.REDIS_URL and shutil.which("redis-server")),
        reason="needs PostgreSQL, Redis and redis-server (set DATABASE_URL and REDIS_URL)",
    ),
    pytest.mark.django_db(transaction=True),
]

# What POST /runs may take with Redis frozen: the publish and each cache command give up after
# SPARKOPS_REDIS_SOCKET_TIMEOUT (1 s); a request makes at most three of them (two metric writes,
# one publish). README, "Dispatch".
ANSWER_BOUND = 5.0
REAPER_LOOP = "import time\nfrom runs.tasks import reap\nwhile True:\n    reap()\n    time.sleep(1)\n"


class Process:
    """A process group of ours, logging to a file, stopped by its id."""

    def __init__(self, command: list[str], env: dict[str, str], log_path) -> None:
        self.log_path = log_path
        self.process = subprocess.Popen(  # noqa: S603 - our own processes, fixed arguments
            command, cwd=ROOT, env=env, stdout=log_path.open("a"), stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


class Supervised:
    """A worker restarted whenever it exits, as docker-compose's ``restart: unless-stopped`` does
    in production: kombu's Redis transport can lose its connection in the middle of an ack and
    take the worker down ("Unrecoverable error: AttributeError ... 'hostname'"). The guarantee
    under test is that nothing is lost or done twice across that, not that the process survives."""

    def __init__(self, log_dir, env: dict[str, str]) -> None:
        self.log_dir, self.env = log_dir, env
        self.workers = [Worker(log_dir / "worker.log", env=env).start()]
        self._stopping = threading.Event()
        self._watch = threading.Thread(target=self._restart_when_down, daemon=True)
        self._watch.start()

    def _restart_when_down(self) -> None:
        while not self._stopping.wait(0.5):
            if self.workers[-1].process.poll() is None:
                continue
            worker = Worker(self.log_dir / f"worker-{len(self.workers)}.log", env=self.env)
            self.workers.append(worker)
            print(f"the worker exited; restarted as {worker.log_path.name}")
            with contextlib.suppress(RuntimeError):  # not ready yet (the broker is down), or exited:
                worker.start()  # watched like the first

    def stop(self) -> None:
        self._stopping.set()
        self._watch.join()
        for worker in self.workers:
            worker.stop()


@pytest.fixture
def stack(django_db_setup, tmp_path):
    """A throwaway Redis, a worker, a web server and a reaper ticking every second, all on it."""
    fake = FakeOpenAI()
    redis = ThrowawayRedis(tmp_path).start()
    env = {**process_env(), "REDIS_URL": redis.url}
    port = free_port()
    started = []
    try:
        web = Process(
            [sys.executable, "-m", "uvicorn", "sparkops.asgi:application", "--port", str(port), "--workers", "1"],
            env,
            tmp_path / "web.log",
        )
        started.append(web)
        started.append(Process([sys.executable, "manage.py", "shell", "-c", REAPER_LOOP], env, tmp_path / "reap.log"))
        started.append(Supervised(tmp_path, env={"REDIS_URL": redis.url}))
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{base}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        yield {"redis": redis, "fake": fake, "base": base, "logs": tmp_path}
    finally:
        for process in reversed(started):
            process.stop()
        redis.stop()
        fake.stop()


def two_step_workflow(team, fake):
    project = team.project
    credential = ProviderCredential(project=project, name="local", provider="openai", base_url=fake.base_url)
    agent_services.credential_save(credential=credential, secret="sk-local")
    agent = Agent(
        project=project, slug="smart", name="Smart", provider="openai", model="gpt-4o-mini", credential=credential
    )
    agent_services.agent_save(agent=agent)
    steps = [
        {"key": "first", "kind": "agent", "agent": "smart", "prompt": "first {{ inputs.name }}"},
        {"key": "second", "kind": "agent", "agent": "smart", "prompt": "second {{ inputs.name }}"},
    ]
    steps[1]["depends_on"] = ["first"]
    return workflow_services.workflow_create(
        project=project,
        user=None,
        name="Two",
        slug="two",
        definition={"steps": steps},
        input_schema={"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
        publish=True,
    )


def test_runs_created_while_redis_is_killed_or_frozen_answer_201_in_bounded_time_and_all_finish_once(stack):
    team = make_team()
    workflow = two_step_workflow(team, stack["fake"])
    owner = team.members[Role.OWNER]
    _, raw = account_services.api_key_create(
        user=owner, creator_role=Role.OWNER, project=team.project, name="load", role=Role.DEVELOPER
    )
    answers: list[tuple[int, float, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(number: int) -> None:
        with httpx.Client(base_url=stack["base"], headers={"Authorization": f"Api-Key {raw}"}, timeout=30) as http:
            sent = 0
            while not stop.is_set():
                sent += 1
                name = f"c{number}-{sent}"
                started = time.monotonic()
                response = http.post("/api/v1/runs", json={"workflow": str(workflow.pk), "inputs": {"name": name}})
                with lock:
                    answers.append((response.status_code, time.monotonic() - started, response.text[:300]))
                time.sleep(0.1)

    clients = [threading.Thread(target=client, args=[n]) for n in range(4)]
    for thread in clients:
        thread.start()
    redis = stack["redis"]
    try:
        time.sleep(2)
        redis.kill()  # every queued message is lost with it
        time.sleep(3)
        redis.start()  # empty, same port
        time.sleep(2)
        redis.freeze()  # accepts connections, answers nothing
        time.sleep(4)
        redis.thaw()
        time.sleep(2)
    finally:
        stop.set()
        for thread in clients:
            thread.join()

    statuses = [status for status, _, _ in answers]
    slowest = max(seconds for _, seconds, _ in answers)
    print(f"{len(answers)} POST /runs, slowest {slowest:.2f} s, statuses {sorted(set(statuses))}")
    assert [answer for answer in answers if answer[0] != 201] == []
    assert slowest < ANSWER_BOUND
    run_ids = list(Run.objects.filter(workflow=workflow).values_list("pk", flat=True))
    assert len(run_ids) == len(answers)

    # STALE_RUN (30 s) brings back runs whose first advance was lost, DISPATCH_GRACE (60 s) steps.
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        if not Run.objects.filter(pk__in=run_ids).exclude(status__in=RUN_TERMINAL).exists():
            break
        time.sleep(1)
    logs = "\n".join(path.read_text()[-3000:] for path in sorted(stack["logs"].glob("*.log")))
    assert set(Run.objects.filter(pk__in=run_ids).values_list("status", flat=True)) == {RunStatus.SUCCEEDED}, logs
    assert not RunStep.objects.filter(run__in=run_ids).exclude(status=StepStatus.SUCCEEDED).exists()
    prompts = stack["fake"].prompts
    names = [run.inputs["name"] for run in Run.objects.filter(pk__in=run_ids)]
    assert all(prompts[f"first {name}"] == 1 and prompts[f"second {name}"] == 1 for name in names), prompts
