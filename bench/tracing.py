"""What tracing costs the engine: the same runs with tracing off (no SDK: the engine's spans are the
OpenTelemetry API's no-ops) and on (SDK, every instrumentation, export over OTLP/HTTP to a local
receiver in a process of its own), in one process, one after the other (not a test).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/sparkops_bench REDIS_URL=redis://127.0.0.1:6379/6 \
        .venv/bin/python bench/tracing.py --runs 100

The runs are 3-step echo workflows executed in this process (Celery's eager mode: no broker, no
worker, so what is measured is the engine's own time per step). Then the step span alone: the
context manager the engine enters per step, off and on.
"""

import argparse
import subprocess
import sys
import time
import timeit
import urllib.request

from _setup import demo_workflow, django_setup, percentile

RECEIVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
count = {"requests": 0, "bytes": 0}
class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        count["bytes"] += len(self.rfile.read(int(self.headers["Content-Length"])))
        count["requests"] += 1
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def do_GET(self):
        raw = f'{count["requests"]} {count["bytes"]}'.encode()
        self.send_response(200); self.send_header("Content-Length", str(len(raw))); self.end_headers()
        self.wfile.write(raw)
    def log_message(self, *args): pass
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def run_many(user, workflow, count: int) -> list[float]:
    """Per-step times (ms) of ``count`` runs, each run executed entirely inside run_start."""
    from runs import services
    from runs.models import Run

    per_step = []
    for n in range(count):
        started = time.perf_counter()
        run, _ = services.run_start(workflow=workflow, inputs={"topic": f"trace {n}"}, user=user)
        elapsed = (time.perf_counter() - started) * 1000
        assert Run.objects.get(pk=run.pk).status == "succeeded"
        per_step.append(elapsed / 3)
    return per_step


def span_cost(step, number: int = 20000) -> float:
    """Microseconds to enter and leave the step's span (the engine's per-step overhead)."""
    from runs.engine import spans

    def once():
        with spans.step_span(step):
            pass

    return min(timeit.repeat(once, number=number, repeat=3)) / number * 1e6


def turn_tracing_on(origin: str) -> None:
    from django.conf import settings
    from django.db import connections

    from telemetry import tracing

    settings.SPARKOPS_TRACING_EXPORTERS = [{"endpoint": f"{origin}/v1/traces"}]
    tracing.configure()
    connections.close_all()  # new connections go through the instrumented driver


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    django_setup()
    from runs.models import RunStep
    from sparkops.celery import app

    app.conf.task_always_eager = True
    user, _, workflow = demo_workflow(3)
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)  # noqa: S603
    origin = f"http://127.0.0.1:{receiver.stdout.readline().strip()}"
    try:
        run_many(user, workflow, 5)  # warm-up: caches, compiled templates, connections
        off = run_many(user, workflow, args.runs)
        step = RunStep.objects.select_related("run").filter(run__workflow=workflow).first()
        span_off = span_cost(step)
        turn_tracing_on(origin)
        run_many(user, workflow, 5)
        on = run_many(user, workflow, args.runs)
        span_on = span_cost(step, number=2000)
        from telemetry import tracing

        tracing.flush()
        exported = urllib.request.urlopen(origin, timeout=5).read().decode().split()  # noqa: S310 - local
    finally:
        receiver.terminate()
    report(args.runs, off, on, span_off, span_on, exported)


def report(runs: int, off: list[float], on: list[float], span_off: float, span_on: float, exported) -> None:
    print(f"{runs} runs x 3 echo steps, in-process (eager), tracing off then on")
    print(f"{'':28} {'off':>12} {'on':>12}")
    print(f"{'steps/s':28} {1000 / (sum(off) / len(off)):12.1f} {1000 / (sum(on) / len(on)):12.1f}")
    for q in (50, 95):
        print(f"{f'per-step p{q} (ms)':28} {percentile(off, q):12.2f} {percentile(on, q):12.2f}")
    print(f"{'step span alone (us)':28} {span_off:12.2f} {span_on:12.2f}")
    print(f"exported: {exported[0]} OTLP requests, {int(exported[1]) // 1024} KiB")


if __name__ == "__main__":
    main()
