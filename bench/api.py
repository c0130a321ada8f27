"""Run creation through the API (not a test), beside its ceiling: 8 concurrent clients POST
/api/v1/runs against gunicorn + uvicorn workers on PostgreSQL, in phases alternating with a bare
DRF create (bench/bare_urls.py: a plain ModelSerializer CreateAPIView inserting one row, with the
same authentication) served by the same server, settings and workers.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/sparkops_bench REDIS_URL=redis://127.0.0.1:6379/6 \
        .venv/bin/python bench/api.py --seconds 10 --rounds 3 --clients 8 --web-workers 2

No Celery worker runs: the runs stay queued (their advance messages are purged at the end), so
this measures the API, the validation and the transaction that writes a run and its steps. Each
round runs both phases, in alternating order (A B, B A, ...), so a noisy neighbour weighs on both.
"""

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["DJANGO_SETTINGS_MODULE"] = "bench.bare_settings"  # the product's settings + the bare endpoint

import httpx
from _setup import client_arguments, demo_workflow, django_setup, percentile, run_clients, serve

# Another bench's server may hold the default port: SPARKOPS_BENCH_PORT picks another.
PORT = int(os.environ.get("SPARKOPS_BENCH_PORT", "8765"))
RUNS = "/api/v1/runs"
BARE = "/api/v1/_bench/bare"
LOG = Path(tempfile.gettempdir()) / "sparkops-bench-api.log"


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
    # The server logs a line or two per request, as in production; they go to a file, not the terminal.
    log = open(LOG, "w")  # noqa: SIM115 - the server writes it until the bench ends
    return serve(command, PORT, env, stdout=log, stderr=subprocess.STDOUT)


def client_loop(token: str, url: str, body: dict, stop: float, latencies: list[float], errors: list[int]) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", headers=headers, timeout=30) as client:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            response = client.post(url, json=body)
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 201:
                errors.append(response.status_code)


def phase(clients: int, seconds: float, token: str, url: str, body: dict) -> tuple[list[float], list[int]]:
    latencies: list[float] = []
    errors: list[int] = []
    run_clients(clients, client_loop, token, url, body, time.perf_counter() + seconds, latencies, errors)
    return latencies, errors


def line(name: str, latencies: list[float], errors: list[int], seconds: float) -> str:
    return (
        f"{name:<10} {len(latencies) / seconds:7.1f} req/s  p50 {percentile(latencies, 50):6.1f} ms  "
        f"p95 {percentile(latencies, 95):6.1f} ms  {len(errors)} errors"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = client_arguments(parser, seconds=10)
    django_setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    from accounts.tokens import tokens_for_user
    from sparkops.celery import app

    user, _, workflow = demo_workflow(3)
    token = tokens_for_user(user)["access"]
    bodies = {
        RUNS: {"workflow": str(workflow.pk), "inputs": {"topic": "bench"}},
        BARE: {"channel": "api", "action": "create", "object_type": "bench.bare", "object_id": "1", "changes": {}},
    }
    names = {RUNS: "POST /runs", BARE: "bare DRF"}
    totals = {url: ([], [], 0.0) for url in bodies}
    web = start_web(args.web_workers)
    try:
        for url, body in bodies.items():  # warm up: imports, caches, the pool's connections
            phase(args.clients, 2, token, url, body)
        for round_ in range(args.rounds):
            order = list(bodies) if round_ % 2 == 0 else list(reversed(bodies))
            for url in order:
                latencies, errors = phase(args.clients, args.seconds, token, url, bodies[url])
                print(f"round {round_ + 1}: " + line(names[url], latencies, errors, args.seconds), flush=True)
                all_latencies, all_errors, seconds = totals[url]
                totals[url] = (all_latencies + latencies, all_errors + errors, seconds + args.seconds)
    finally:
        web.terminate()
        web.wait(30)
        app.control.purge()
    rounds = f"{args.rounds} rounds of {args.seconds:.0f}s each"
    print(f"\n{args.clients} clients, {args.web_workers} web workers, {rounds}:")
    for url in bodies:
        print("  " + line(names[url], *totals[url]))
    rate = {url: len(latencies) / seconds for url, (latencies, _, seconds) in totals.items()}
    print(f"  POST /runs = {rate[RUNS] / rate[BARE]:.0%} of the bare DRF create (target >= 40%)")


if __name__ == "__main__":
    main()
