"""Engine throughput and latency through a real Celery worker (not a test), each beside the
ceiling measured in the same run, so the ratio holds on a noisy machine.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/sparkops_bench REDIS_URL=redis://127.0.0.1:6379/6 \
        .venv/bin/python bench/engine.py --runs 300 --concurrency 2 [--policies]
    .venv/bin/python bench/engine.py --embedded     # SQLite + filesystem broker in a temporary folder

1. Ceiling (PostgreSQL + Redis): a burst of no-op Celery tasks on the same worker, tasks/s.
2. One run at a time: a 3-step echo run's end to end time, from the run's ``queued_at`` to its
   ``finished_at`` (database timestamps: the bench's own wait loop does not bound it).
3. Burst (PostgreSQL + Redis): the worker stops consuming, N runs are created, the worker
   consumes again; steps/s from that moment to the last run's ``finished_at``. Per-step engine
   time (claim to finish minus adapter time) and dispatch delay (queued to claimed).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if "--embedded" in sys.argv:  # before Django reads its settings
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    os.environ["SPARKOPS_VAR_DIR"] = tempfile.mkdtemp(prefix="sparkops-bench-")

from _setup import demo_workflow, django_setup, percentile, start_worker


def wait_all(run_ids, timeout: float) -> None:
    from runs.choices import RUN_TERMINAL
    from runs.models import Run

    deadline = time.monotonic() + timeout
    while Run.objects.filter(pk__in=run_ids).exclude(status__in=RUN_TERMINAL).exists():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for runs")
        time.sleep(0.05)  # latency comes from the database's timestamps, not from this loop


def set_policies(project_id, on: bool) -> None:
    """A roomy budget and run ceiling (never reached), or none: the cost of enforcement alone."""
    from policies.models import Policy

    Policy.objects.filter(project_id=project_id, name__startswith="bench ").delete()
    if on:
        Policy.objects.create(
            project_id=project_id, name="bench budget", kind="budget", config={"amount_usd": 1e6, "window": "day"}
        )
        Policy.objects.create(project_id=project_id, name="bench ceiling", kind="run_ceiling", config={"max_usd": 1e5})


def noop_ceiling(app, tasks: int) -> float:
    """No-op tasks/s through the same worker and broker: what Celery alone allows."""
    inspect = app.control.inspect(timeout=1.0)

    def done() -> int:
        stats = inspect.stats() or {}
        return sum(s.get("total", {}).get("sparkops.noop", 0) for s in stats.values())

    before = done()
    started = time.perf_counter()
    for _ in range(tasks):
        app.send_task("sparkops.noop")
    while done() < before + tasks:
        time.sleep(0.05)
    return tasks / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--sequential", type=int, default=30, help="runs started one at a time, for latency")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument("--noop-tasks", type=int, default=2000, help="no-op tasks in the ceiling burst")
    parser.add_argument(
        "--policies", action="store_true", help="under a budget and a run ceiling: every call reserves and settles"
    )
    parser.add_argument("--embedded", action="store_true", help="SQLite + filesystem broker (latency only)")
    args = parser.parse_args()
    django_setup()
    from django.conf import settings

    from runs import services
    from runs.models import Run
    from sparkops.celery import app

    print(f"database: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}, broker: {app.conf.broker_url}")
    user, _, workflow = demo_workflow(3)
    set_policies(workflow.project_id, args.policies)
    app.control.purge()
    worker = start_worker(args.concurrency, Path(tempfile.mkdtemp()) / "worker.log")
    ceiling = burst = None
    try:
        if not args.embedded:
            noop_ceiling(app, 200)  # warm-up
            ceiling = noop_ceiling(app, args.noop_tasks)
        seq_ids = []
        for n in range(args.sequential + 3):
            run, _ = services.run_start(workflow=workflow, inputs={"topic": f"seq {n}"}, user=user)
            wait_all([run.pk], 30)
            seq_ids.append(run.pk)
        seq_ids = seq_ids[3:]  # warm-up: first connections, imports, caches
        if not args.embedded:
            app.control.cancel_consumer("celery", reply=True)
            run_ids = [
                services.run_start(workflow=workflow, inputs={"topic": f"burst {n}"}, user=user)[0].pk
                for n in range(args.runs)
            ]
            app.control.add_consumer("celery", reply=True)
            started = time.time()
            wait_all(run_ids, 600)
            last = max(Run.objects.filter(pk__in=run_ids).values_list("finished_at", flat=True))
            burst = (run_ids, last.timestamp() - started)
    finally:
        worker.terminate()
        worker.wait(30)
    report(args, ceiling, burst, seq_ids)


def report(args, ceiling, burst, seq_ids) -> None:
    from runs.models import Run, RunStep

    print(f"policies: {'budget + run ceiling' if args.policies else 'none'}; {args.concurrency} worker processes")
    seq = Run.objects.filter(pk__in=seq_ids)
    latencies = [(r.finished_at - r.queued_at).total_seconds() * 1000 for r in seq]
    failed = seq.exclude(status="succeeded").count()
    print(f"one at a time: 3-step run queued_at -> finished_at {_p(latencies)} (n={len(latencies)}, {failed} failed)")
    if ceiling:
        print(f"ceiling: no-op Celery tasks {ceiling:.0f} tasks/s ({args.noop_tasks} tasks)")
    if burst:
        run_ids, elapsed = burst
        failed = Run.objects.filter(pk__in=run_ids).exclude(status="succeeded").count()
        steps = RunStep.objects.filter(run_id__in=run_ids)
        engine_ms = [(s.finished_at - s.started_at).total_seconds() * 1000 - (s.latency_ms or 0) for s in steps]
        dispatch_ms = [(s.started_at - s.queued_at).total_seconds() * 1000 for s in steps]
        rate = 3 * len(run_ids) / elapsed
        print(f"burst: {len(run_ids)} runs x 3 steps in {elapsed:.2f}s, {failed} failed")
        print(f"  {len(run_ids) / elapsed:.1f} runs/s, {rate:.1f} steps/s = {rate / ceiling:.0%} of the no-op ceiling")
        print(f"  per-step engine time (claim to finish, minus adapter): {_p(engine_ms)}")
        print(f"  dispatch delay under load (queued to claimed): {_p(dispatch_ms)}")


def _p(values: list[float]) -> str:
    return f"p50 {percentile(values, 50):.1f} ms, p95 {percentile(values, 95):.1f} ms"


if __name__ == "__main__":
    main()
