"""Run creation through the API (not a test): 8 concurrent clients POST /api/v1/runs against
gunicorn + uvicorn workers on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/sparkops_bench REDIS_URL=redis://127.0.0.1:6379/6 \
        .venv/bin/python bench/api.py --seconds 15 --clients 8 --web-workers 2

No Celery worker runs: the runs stay queued (their advance messages are purged at the end), so
this measures the API, the validation and the transaction that writes a run and its steps.
"""

import argparse
import logging
import os
import subprocess
import sys
import time

import httpx
from _setup import client_arguments, demo_workflow, django_setup, percentile, run_clients, serve

# Another bench's server may hold the default port: SPARKOPS_BENCH_PORT picks another.
PORT = int(os.environ.get("SPARKOPS_BENCH_PORT", "8765"))


def start_web(workers: int, **env_vars: str) -> subprocess.Popen:
    env = {**os.environ, "DJANGO_DEBUG": "false", "SPARKOPS_REGISTER_RATE": "100000/hour", **env_vars}
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "sparkops.asgi:application",
        "-k",
        "uvicorn_worker.UvicornWorker",
        "-w",
        str(workers),
        "-b",
        f"127.0.0.1:{PORT}",
        "--log-level",
        "warning",
    ]
    return serve(command, PORT, env)


def client_loop(token: str, workflow_id: str, stop: float, latencies: list[float], errors: list[int]) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    body = {"workflow": workflow_id, "inputs": {"topic": "bench"}}
    with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", headers=headers, timeout=30) as client:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            response = client.post("/api/v1/runs", json=body)
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 201:
                errors.append(response.status_code)


def main() -> None:
    parser = argparse.ArgumentParser()
    args = client_arguments(parser, seconds=15)
    django_setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    from accounts.tokens import tokens_for_user
    from sparkops.celery import app

    user, _, workflow = demo_workflow(3)
    token = tokens_for_user(user)["access"]
    web = start_web(args.web_workers)
    latencies: list[float] = []
    errors: list[int] = []
    try:
        stop = time.perf_counter() + args.seconds
        run_clients(args.clients, client_loop, token, str(workflow.pk), stop, latencies, errors)
    finally:
        web.terminate()
        web.wait(30)
        app.control.purge()
    print(
        f"{len(latencies)} run creations in {args.seconds:.0f}s with {args.clients} clients, "
        f"{args.web_workers} web workers: {len(latencies) / args.seconds:.1f} runs/s, {len(errors)} errors"
    )
    print(f"  latency p50 {percentile(latencies, 50):.1f} ms, p95 {percentile(latencies, 95):.1f} ms")


if __name__ == "__main__":
    main()
