"""Reads at a million runs (not a test): 8 clients against the production server settings.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/sparkops_bench REDIS_URL=redis://127.0.0.1:6379/6 \
        .venv/bin/python bench/lists.py --runs 1000000 --seconds 20 --clients 8

Seeds (once) two projects with ``--runs`` runs of 3 steps each, over the last ~35 days, with SQL
(generate_series), then times ``GET /api/v1/runs`` (both projects), ``?status=failed``,
``GET /runs/{id}``, ``/runs/{id}/steps``, ``GET /api/v1/metrics``, the admin's run list and its
dashboard (charts read afresh), each beside the ceiling measured in the same run: ``GET /health``
through the same server.

``GET /api/v1/metrics`` and the dashboard are timed twice: first with no hourly roll-ups (every run
of the week read live, as before roll-ups; ``--raw-seconds``), then after the backfill a fresh
install's first beat tick does (``rollups.roll``, timed), with everything else.
"""

import argparse
import logging
import random
import time
from collections import defaultdict

import httpx
from _setup import client_arguments, demo_workflow, django_setup, percentile, run_clients
from api import PORT, start_web

SEED_TITLE = "bench seed"

SEED_RUNS = """
INSERT INTO runs_run (id, trigger, title, priority, inputs, outputs, error, status, input_tokens, output_tokens,
    cost_usd, unpriced_calls, idempotency_key, event_seq, queued_at, started_at, finished_at, updated_at,
    project_id, workflow_id, workflow_version_id, request_fingerprint, from_step, overrides)
SELECT gen_random_uuid(), 'api', %(title)s, 0, '{"topic": "seed"}', '{}',
    CASE WHEN g %% 20 = 0 THEN '{"step": "s1", "type": "Timeout"}'::jsonb ELSE '{}'::jsonb END,
    CASE WHEN g %% 20 = 0 THEN 'failed' ELSE 'succeeded' END, 30, 50, 0.00013, 0, '', 10,
    now() - g * interval '3 seconds', now() - g * interval '3 seconds' + interval '5 ms',
    now() - g * interval '3 seconds' + interval '95 ms', now() - g * interval '3 seconds' + interval '95 ms',
    CASE WHEN g %% 2 = 0 THEN %(p1)s::uuid ELSE %(p2)s::uuid END,
    CASE WHEN g %% 2 = 0 THEN %(w1)s::uuid ELSE %(w2)s::uuid END,
    CASE WHEN g %% 2 = 0 THEN %(v1)s ELSE %(v2)s END, '', '', '{}'
FROM generate_series(1, %(n)s) g
"""
SEED_STEPS = """
INSERT INTO runs_runstep (key, kind, position, status, attempt, max_attempts, input, output, error, provider, model,
    input_tokens, output_tokens, cost_usd, unpriced_calls, latency_ms, queued_at, started_at, finished_at, run_id,
    hold, lost_workers, plan_reason)
SELECT 's' || k, 'agent', k, 'succeeded', 1, 1, '{}', '"echo"', '{}', 'echo', 'echo-1', 10, 17, 0.00004, 0, 0.1,
    r.queued_at + k * interval '30 ms', r.queued_at + k * interval '30 ms' + interval '5 ms',
    r.queued_at + k * interval '30 ms' + interval '25 ms', r.id, '{}', 0, ''
FROM runs_run r CROSS JOIN generate_series(0, 2) k WHERE r.title = %(title)s
"""


def seed(runs: int) -> None:
    from django.db import connection

    from runs.models import Run
    from workflows.selectors import latest_published_version

    _, project, workflow = demo_workflow(3)
    _, other, workflow2 = demo_workflow(3, project_slug="bench-2")
    have = Run.objects.filter(title=SEED_TITLE).count()
    if have >= runs:
        print(f"seed: {have} runs already there")
        return
    started = time.perf_counter()
    params = {
        "title": SEED_TITLE,
        "n": runs,
        "p1": str(project.pk),
        "p2": str(other.pk),
        "w1": str(workflow.pk),
        "w2": str(workflow2.pk),
        "v1": latest_published_version(workflow).pk,
        "v2": latest_published_version(workflow2).pk,
    }
    with connection.cursor() as cursor:
        seeded = "SELECT id FROM runs_run WHERE title = %s"
        cursor.execute(f"DELETE FROM runs_runstep WHERE run_id IN ({seeded})", [SEED_TITLE])
        cursor.execute("DELETE FROM runs_run WHERE title = %s", [SEED_TITLE])
        cursor.execute(SEED_RUNS, params)
        runs_at = time.perf_counter()
        cursor.execute(SEED_STEPS, params)
        steps_at = time.perf_counter()
        cursor.execute("VACUUM ANALYZE runs_run")
        cursor.execute("VACUUM ANALYZE runs_runstep")
    print(
        f"seed: {runs} runs in {runs_at - started:.1f}s, {3 * runs} steps in {steps_at - runs_at:.1f}s, "
        f"vacuum analyze {time.perf_counter() - steps_at:.1f}s"
    )


def admin_cookie() -> dict:
    """A staff session for the admin's run list, written to the session store the server reads."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    from accounts.models import User

    admin, _ = User.objects.get_or_create(email="bench-admin@sparkops.local")
    admin.is_staff = admin.is_superuser = True
    admin.set_password("bench-admin-password")
    admin.save()
    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session[SESSION_KEY] = str(admin.pk)
    session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = admin.get_session_auth_hash()
    session.save()
    return {settings.SESSION_COOKIE_NAME: session.session_key}


def measure(targets, seconds: float, clients: int) -> tuple[dict, list]:
    latencies, errors = defaultdict(list), []
    for _name, url, headers, cookie in {t[0]: t for t in targets}.values():  # warm-up, one each
        httpx.get(f"http://127.0.0.1:{PORT}{url}", headers=headers, cookies=cookie, timeout=120)
    stop = time.perf_counter() + seconds
    run_clients(clients, client_loop, targets, stop, latencies, errors)
    return latencies, errors


def report(title: str, latencies: dict, errors: list) -> None:
    print(f"{title}: {len(errors)} errors")
    if errors:
        print(f"  first errors: {errors[:5]}")
    ceiling = percentile(latencies["health (ceiling)"], 99)
    for name, values in latencies.items():
        p50, p95, p99 = (percentile(values, q) for q in (50, 95, 99))
        print(
            f"  {name:28} n={len(values):5} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  p99 {p99:7.1f} ms"
            f"  (p99 {p99 / ceiling:5.1f}x the ceiling's)"
        )


def forget_rollups() -> None:
    from telemetry.models import RollupPending, RollupState, RunHourlyRollup

    for model in (RollupState, RollupPending, RunHourlyRollup):
        model.objects.all().delete()


def client_loop(targets, stop: float, latencies: dict, errors: list) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=60) as client:
        while time.perf_counter() < stop:
            name, url, headers, cookies = random.choice(targets)
            client.cookies.clear()
            started = time.perf_counter()
            response = client.get(url, headers=headers, cookies=cookies)
            latencies[name].append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                errors.append((name, response.status_code))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--raw-seconds", type=float, default=20, help="Metrics and dashboard with no roll-ups.")
    args = client_arguments(parser, seconds=20)
    django_setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from accounts.tokens import tokens_for_user
    from runs.models import Run
    from telemetry import rollups

    seed(args.runs)
    user, _, _ = demo_workflow(3)
    bearer = {"Authorization": f"Bearer {tokens_for_user(user)['access']}"}
    some = list(Run.objects.filter(title=SEED_TITLE).order_by("-queued_at").values_list("pk", flat=True)[:5000:50])
    cookies = admin_cookie()
    health = [("health (ceiling)", "/health", {}, {})]
    rolled_up = [("GET /metrics", "/api/v1/metrics", bearer, {})]
    rolled_up += [("admin dashboard, fresh", "/admin/", {}, cookies)]
    targets = health + rolled_up
    targets += [("GET /runs (2 projects)", "/api/v1/runs", bearer, {})]
    targets += [("GET /runs?status=failed", "/api/v1/runs?status=failed", bearer, {})]
    targets += [("GET /runs/{id}", f"/api/v1/runs/{pk}", bearer, {}) for pk in some[:10]]
    targets += [("GET /runs/{id}/steps", f"/api/v1/runs/{pk}/steps", bearer, {}) for pk in some[10:20]]
    targets += [("admin run list", "/admin/runs/run/", {}, cookies)]
    targets += [("admin run list, failed", "/admin/runs/run/?status__exact=failed", {}, cookies)]
    web = start_web(args.web_workers, SPARKOPS_DASHBOARD_CACHE_SECONDS="0")
    try:
        forget_rollups()
        raw = measure(health + rolled_up, args.raw_seconds, args.clients) if args.raw_seconds else None
        started = time.perf_counter()
        rolled = rollups.roll()
        print(
            f"roll-up (first tick, {rolled.hours} hours, {rolled.runs} runs): {time.perf_counter() - started:.1f} s; "
            f"a tick after that: ", end="",
        )  # fmt: skip
        started = time.perf_counter()
        rollups.roll()
        print(f"{(time.perf_counter() - started) * 1000:.0f} ms")
        latencies, errors = measure(targets, args.seconds, args.clients)
    finally:
        web.terminate()
        web.wait(30)
    setting = f"{args.clients} clients, {args.web_workers} web workers"
    if raw:
        report(f"no roll-ups (every run of the week read live), {setting}, {args.raw_seconds:.0f}s", *raw)
    report(f"with hourly roll-ups, {setting}, {args.seconds:.0f}s", latencies, errors)


if __name__ == "__main__":
    main()
