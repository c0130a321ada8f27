"""Webhook delivery latency through a real Celery worker (not a test).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/sparkops_bench REDIS_URL=redis://127.0.0.1:6379/6 \
        .venv/bin/python bench/webhooks.py --notices 200 --concurrency 2

Writes N notices, one transaction each, 20 ms apart, to a project with one signed webhook endpoint
on a local receiver, and prints commit-to-receiver latency (the notice's commit to the request's
arrival: the on-commit wake-up, the claim, signing, the guarded HTTP call) and the task time.
"""

import argparse
import os
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("SPARKOPS_HTTP_ALLOWED_NETWORKS", "127.0.0.1/32")  # the receiver, for us and the worker

from _setup import demo_workflow, django_setup, percentile, start_worker

arrivals: dict[str, float] = {}


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        arrivals[self.headers["webhook-id"]] = time.monotonic()
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def warm_up(publish, project, transaction) -> None:
    """Wait until the worker delivers a first notice: a prefork start-up on a busy machine takes
    longer than _setup's sleep, and notices written meanwhile would measure the start-up."""
    with transaction.atomic():
        publish(project.pk, "run.failed", payload={"warm_up": True})
    deadline = time.monotonic() + 120
    while not arrivals and time.monotonic() < deadline:
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--notices", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    django_setup()
    from django.db import transaction

    from notices.services import publish
    from webhooks import services
    from webhooks.models import Endpoint

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _, project, _ = demo_workflow()
    Endpoint.objects.filter(project=project).delete()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    services.endpoint_create(endpoint=Endpoint(project=project, url=url, description="bench"))
    worker = start_worker(args.concurrency, Path(tempfile.mkdtemp()) / "worker.log")
    try:
        warm_up(publish, project, transaction)
        arrivals.clear()
        committed = {}
        for n in range(args.notices):
            with transaction.atomic():
                notice = publish(project.pk, "run.failed", payload={"n": n})
                delivery_id = str(notice.deliveries.get().pk)
            committed[delivery_id] = time.monotonic()
            time.sleep(0.02)
        deadline = time.monotonic() + 120
        while len(arrivals) < len(committed) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    latencies = [(arrivals[k] - committed[k]) * 1000 for k in committed if k in arrivals]
    print(f"delivered {len(latencies)}/{len(committed)}")
    print(f"commit to receiver: p50 {percentile(latencies, 50):.1f} ms, p95 {percentile(latencies, 95):.1f} ms")


if __name__ == "__main__":
    main()
