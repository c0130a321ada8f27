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
import os
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
    """Everything but the SQL statements' spans, first."""
    from django.conf import settings

    from telemetry import tracing

    os.environ["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "psycopg,sqlite3"
    settings.SPARKOPS_TRACING_EXPORTERS = [{"endpoint": f"{origin}/v1/traces"}]
    tracing.configure()


def trace_sql_too() -> None:
    from django.db import connections

    from telemetry import tracing

    tracing.INSTRUMENTATIONS["psycopg"]()
    tracing.INSTRUMENTATIONS["sqlite3"]()
    connections.close_all()  # new connections go through the instrumented driver


def exported(origin: str) -> tuple[int, int]:
    from telemetry import tracing

    tracing.flush()
    requests, size = urllib.request.urlopen(origin, timeout=5).read().decode().split()
    return int(requests), int(size)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    django_setup()
    from runs.models import RunStep
    from sparkops.celery import app

    app.conf.task_always_eager = True
    user, _, workflow = demo_workflow(3)
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    origin = f"http://127.0.0.1:{receiver.stdout.readline().strip()}"
    try:
        run_many(user, workflow, 5)  # warm-up: caches, compiled templates, connections
        off = run_many(user, workflow, args.runs)
        step = RunStep.objects.select_related("run").filter(run__workflow=workflow).first()
        span_off = span_cost(step)
        turn_tracing_on(origin)
        run_many(user, workflow, 5)
        sent_warm = exported(origin)
        on = run_many(user, workflow, args.runs)
        span_on = span_cost(step, number=2000)
        sent_on = exported(origin)
        trace_sql_too()
        run_many(user, workflow, 5)
        sent_before = exported(origin)
        with_sql = run_many(user, workflow, args.runs)
        sent_sql = exported(origin)
    finally:
        receiver.terminate()
    sizes = [
        "",
        f"{(sent_on[1] - sent_warm[1]) / args.runs / 1024:.1f}",
        f"{(sent_sql[1] - sent_before[1]) / args.runs / 1024:.1f}",
    ]
    report(args.runs, {"off": off, "on, no SQL spans": on, "on, all": with_sql}, (span_off, span_on, span_on), sizes)


def report(runs: int, columns: dict[str, list[float]], span_costs, sizes) -> None:
    print(f"{runs} runs x 3 echo steps per column, in-process (eager), one after the other")
    print(f"{'':24}" + "".join(f"{name:>18}" for name in columns))
    print(f"{'steps/s':24}" + "".join(f"{1000 / (sum(v) / len(v)):18.1f}" for v in columns.values()))
    for q in (50, 95):
        print(f"{f'per-step p{q} (ms)':24}" + "".join(f"{percentile(v, q):18.2f}" for v in columns.values()))
    print(f"{'step span alone (us)':24}" + "".join(f"{cost:18.2f}" for cost in span_costs))
    print(f"{'exported per run (KiB)':24}" + "".join(f"{size:>18}" for size in sizes))


if __name__ == "__main__":
    main()
