"""Shared set-up for the benchmarks: Django on the database and broker the environment names."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sparkops.settings.local")
os.environ.setdefault("DJANGO_DEBUG", "false")


def django_setup() -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def serve(command: list[str], port: int, env: dict[str, str], **popen) -> subprocess.Popen:
    """Start a web server of ours and wait until it answers /health on ``port``; ``popen``, e.g.
    ``stdout``, goes to subprocess.Popen."""
    import httpx

    try:  # a server already there would answer for ours, and the bench would time it
        httpx.get(f"http://127.0.0.1:{port}/health")
        raise SystemExit(f"port {port} is taken by another server (SPARKOPS_BENCH_PORT picks another)")
    except httpx.HTTPError:
        pass
    process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True, **popen)
    for _ in range(200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.terminate()
    raise SystemExit("web server did not start")


def client_arguments(parser, *, seconds: float):
    """The options of the benches that drive a web server with clients; parses them."""
    parser.add_argument("--seconds", type=float, default=seconds)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--web-workers", type=int, default=2)
    return parser.parse_args()


def run_clients(clients: int, target, *args) -> None:
    """``clients`` threads running ``target(*args)`` at once, until each returns."""
    threads = [threading.Thread(target=target, args=args) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def start_worker(concurrency: int, log: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "sparkops",
        "worker",
        "-P",
        "prefork",
        "-c",
        str(concurrency),
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel=WARNING",
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    time.sleep(4)  # prefork start-up; the first tasks would only wait in the queue otherwise
    return process


def demo_workflow(steps: int = 3, project_slug: str = "bench"):
    """A project with an echo agent and a published linear workflow of ``steps`` agent steps."""
    from accounts.models import User
    from agents import services as agent_services
    from agents.models import Agent
    from projects import services as project_services
    from projects.models import Project
    from workflows import services as workflow_services
    from workflows.models import Workflow

    user, _ = User.objects.get_or_create(email="bench@sparkops.local")
    project = Project.objects.filter(slug=project_slug).first() or project_services.project_create(
        user=user, name=project_slug.title(), slug=project_slug
    )
    if not Agent.objects.filter(project=project, slug="echo").exists():
        agent_services.agent_save(
            agent=Agent(project=project, slug="echo", name="Echo", provider="echo", model="echo-1")
        )
    slug = f"linear-{steps}"
    workflow = Workflow.objects.filter(project=project, slug=slug).first()
    if workflow is None:
        definition = {
            "steps": [
                {
                    "key": f"s{n}",
                    "kind": "agent",
                    "agent": "echo",
                    "prompt": f"step {n} of {{{{ inputs.topic }}}}",
                    **({"depends_on": [f"s{n - 1}"]} if n else {}),
                }
                for n in range(steps)
            ]
        }
        schema = {"type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"]}
        workflow = workflow_services.workflow_create(
            project=project, user=user, name=slug, slug=slug, definition=definition, input_schema=schema, publish=True
        )
    return user, project, workflow
