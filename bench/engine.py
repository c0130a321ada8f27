"""Engine throughput and overhead through a real Celery worker (not a test).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/sparkops_bench REDIS_URL=redis://127.0.0.1:6379/6 \
        .venv/bin/python bench/engine.py --runs 300 --concurrency 2

Prints runs/s and steps/s for N runs of a 3-step echo workflow started at once; the end-to-end
time of one run at a time (POST-equivalent to succeeded); and per-step engine overhead: the time
a step spends in the engine, not in the adapter (claim to finish minus adapter latency), and the
dispatch delay (queued to claimed).
"""

import argparse
import tempfile
import time
from pathlib import Path

from _setup import demo_workflow, django_setup, percentile, start_worker


def wait_all(run_ids, timeout: float) -> None:
    from runs.choices import RUN_TERMINAL
    from runs.models import Run

    deadline = time.monotonic() + timeout
    while Run.objects.filter(pk__in=run_ids).exclude(status__in=RUN_TERMINAL).exists():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for runs")
        time.sleep(0.005)  # fine-grained: the poll interval bounds the latency measured


def set_policies(project_id, on: bool) -> None:
    """A roomy budget and run ceiling (never reached), or none: the cost of enforcement alone."""
    from policies.models import Policy

    Policy.objects.filter(project_id=project_id, name__startswith="bench ").delete()
    if on:
        Policy.objects.create(
            project_id=project_id, name="bench budget", kind="budget", config={"amount_usd": 1e6, "window": "day"}
        )
        Policy.objects.create(project_id=project_id, name="bench ceiling", kind="run_ceiling", config={"max_usd": 1e5})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--sequential", type=int, default=30, help="runs started one at a time, for latency")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--policies", action="store_true", help="under a budget and a run ceiling: every call reserves and settles"
    )
    args = parser.parse_args()
    django_setup()
    from runs import services
    from sparkops.celery import app

    user, _, workflow = demo_workflow(3)
    set_policies(workflow.project_id, args.policies)
    app.control.purge()
    worker = start_worker(args.concurrency, Path(tempfile.mkdtemp()) / "worker.log")
    try:
        latencies = []
        for n in range(args.sequential):
            started = time.perf_counter()
            run, _ = services.run_start(workflow=workflow, inputs={"topic": f"seq {n}"}, user=user)
            wait_all([run.pk], 30)
            latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        run_ids = [
            services.run_start(workflow=workflow, inputs={"topic": f"burst {n}"}, user=user)[0].pk
            for n in range(args.runs)
        ]
        wait_all(run_ids, 600)
        elapsed = time.perf_counter() - started
    finally:
        worker.terminate()
        worker.wait(30)

    report(args, run_ids, elapsed, latencies)


def report(args, run_ids, elapsed: float, latencies: list[float]) -> None:
    from runs.models import Run, RunStep

    failed = Run.objects.filter(pk__in=run_ids).exclude(status="succeeded").count()
    steps = RunStep.objects.filter(run_id__in=run_ids)
    engine_ms = [(s.finished_at - s.started_at).total_seconds() * 1000 - (s.latency_ms or 0) for s in steps]
    dispatch_ms = [(s.started_at - s.queued_at).total_seconds() * 1000 for s in steps]
    print(f"policies: {'budget + run ceiling' if args.policies else 'none'}")
    print(f"burst: {args.runs} runs x 3 steps, {args.concurrency} worker processes, {elapsed:.2f}s, {failed} failed")
    print(f"  {args.runs / elapsed:.1f} runs/s, {3 * args.runs / elapsed:.1f} steps/s")
    print(f"  per-step engine time (claim to finish, minus adapter): {_p(engine_ms)}")
    print(f"  dispatch delay under load (queued to claimed): {_p(dispatch_ms)}")
    print(f"one at a time: 3-step run end to end {_p(latencies)} (n={len(latencies)})")


def _p(values: list[float]) -> str:
    return f"p50 {percentile(values, 50):.1f} ms, p95 {percentile(values, 95):.1f} ms"


if __name__ == "__main__":
    main()
