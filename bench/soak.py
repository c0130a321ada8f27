"""A soak (not a test): clients create and read runs against gunicorn + uvicorn workers while a
Celery worker runs them; PostgreSQL backends are sampled every second (the peak is printed) and
every 5xx is counted.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/sparkops_bench REDIS_URL=redis://127.0.0.1:6379/6 \
        .venv/bin/python bench/soak.py --seconds 600 --clients 8 --web-workers 2
"""

import argparse
import logging
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from _setup import client_arguments, demo_workflow, django_setup, percentile, run_clients, start_worker
from api import PORT, start_web


def client_loop(user, workflow_id: str, stop: float, latencies: list, statuses: Counter) -> None:
    from accounts.tokens import tokens_for_user

    body = {"workflow": workflow_id, "inputs": {"topic": "soak"}}
    renew = 0.0
    with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=30) as client:
        while time.perf_counter() < stop:
            if time.perf_counter() > renew:  # a new access token before the last one expires
                client.headers["Authorization"] = f"Bearer {tokens_for_user(user)['access']}"
                renew = time.perf_counter() + 240
            for method, url, payload in (("POST", "/api/v1/runs", body), ("GET", "/api/v1/runs", None)):
                started = time.perf_counter()
                try:
                    response = client.request(method, url, json=payload)
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[response.status_code] += 1
                if method == "POST" and response.status_code == 201:
                    statuses[client.get(f"/api/v1/runs/{response.json()['id']}").status_code] += 1


def sample_backends(stop: float, samples: list[int]) -> None:
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    # Autocommit: within one transaction pg_stat_activity would answer the same snapshot every time.
    with psycopg.connect(
        host=db["HOST"],
        port=db["PORT"] or 5432,
        user=db["USER"],
        password=db["PASSWORD"],
        dbname=db["NAME"],
        autocommit=True,
    ) as connection:
        while time.perf_counter() < stop:
            row = connection.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
            samples.append(row[0])
            time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    args = client_arguments(parser, seconds=600)
    django_setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from sparkops.celery import app

    user, _, workflow = demo_workflow(3)
    app.control.purge()
    worker = start_worker(2, Path(tempfile.mkdtemp()) / "worker.log")
    web = start_web(args.web_workers)
    latencies, statuses, backends = [], Counter(), []
    try:
        stop = time.perf_counter() + args.seconds
        sampler = threading.Thread(target=sample_backends, args=(stop, backends))
        sampler.start()
        run_clients(args.clients, client_loop, user, str(workflow.pk), stop, latencies, statuses)
        sampler.join()
    finally:
        web.terminate()
        worker.terminate()
        web.wait(30)
        worker.wait(30)
        app.control.purge()
    errors = sum(n for status, n in statuses.items() if not isinstance(status, int) or status >= 500)
    print(f"soak: {args.seconds:.0f}s, {args.clients} clients, {args.web_workers} web workers + a 2-process worker")
    print(f"  requests by status: {dict(statuses)}; 5xx or connection errors: {errors}")
    print(f"  latency p50 {percentile(latencies, 50):.1f} ms, p95 {percentile(latencies, 95):.1f} ms")
    print(f"  PostgreSQL backends: peak {max(backends)}, last {backends[-1]} (sampled {len(backends)} times)")


if __name__ == "__main__":
    main()
