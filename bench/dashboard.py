"""The admin dashboard's queries at scale (not a test): seeds a PostgreSQL database with N runs
spread over 30 days (and a priced call for every fifth run), then times the dashboard's whole
context, as the admin index builds it, for all projects and for one.

    createdb -h 127.0.0.1 -U postgres sparkops_bench_dashboard
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/sparkops_bench_dashboard \
        .venv/bin/python bench/dashboard.py --runs 1000000 --projects 4

Seeding uses generate_series, so it needs PostgreSQL; a second call with the same --runs reuses
the rows. Run ``VACUUM ANALYZE runs_run`` after seeding, as autovacuum would have.
"""

import argparse
import statistics
import time

from _setup import demo_workflow, django_setup

SEED_RUNS = """
WITH w AS (
    SELECT row_number() OVER (ORDER BY w.id) - 1 AS i, w.id, w.project_id, v.id AS version_id
    FROM workflows_workflow w JOIN workflows_workflowversion v ON v.workflow_id = w.id AND v.number = 1
    WHERE w.slug = 'linear-3'
)
INSERT INTO runs_run (id, project_id, workflow_id, workflow_version_id, trigger, title, priority, inputs, outputs,
    error, status, input_tokens, output_tokens, cost_usd, unpriced_calls, idempotency_key, request_fingerprint,
    event_seq, queued_at, started_at, finished_at, updated_at, from_step, overrides)
SELECT gen_random_uuid(), w.project_id, w.id, w.version_id, 'api', 'bench', 0, '{}', '{}', '{}',
    (ARRAY['succeeded','succeeded','succeeded','succeeded','succeeded','succeeded','failed','cancelled'])[1 + n %% 8],
    900, 300, 0.0042, 0, '', '', 0, q, q + interval '1 second', q + (1 + n %% 60) * interval '1 second', q, '', '{}'
FROM generate_series(1, %(count)s) AS n
CROSS JOIN LATERAL (SELECT now() - (n::float / %(count)s) * interval '30 days' AS q) AS t
JOIN w ON w.i = n %% (SELECT count(*) FROM w)
"""
SEED_SPEND = """
INSERT INTO policies_spendentry (project_id, run_id, attempt, workflow_id, agent_slug, workflow_slug, provider,
    model, status, reserved_usd, input_tokens, output_tokens, cost_usd, created_at, settled_at)
SELECT r.project_id, r.id, 1, r.workflow_id, 'echo', 'bench', 'echo', 'echo-1', 'settled', 0, 900, 300, 0.0042,
    r.queued_at, r.queued_at
FROM runs_run r WHERE r.title = 'bench' AND (r.id::text LIKE '%%0' OR r.id::text LIKE '%%5')
"""


def seed(runs: int, projects: int) -> None:
    from django.db import connection

    from runs.models import Run

    if Run.objects.filter(title="bench").order_by().count() >= runs:
        return
    for n in range(projects):
        demo_workflow_in(n)
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute(SEED_RUNS, {"count": runs})
        cursor.execute(SEED_SPEND)
        cursor.execute("ANALYZE runs_run; ANALYZE policies_spendentry; ANALYZE runs_runstep")
    print(f"seeded {runs:,} runs in {time.monotonic() - started:.0f} s")


def demo_workflow_in(n: int):
    """One workflow per project (bench, bench-1, ...)."""
    from projects.models import Project

    _, _, workflow = demo_workflow(3)
    if n == 0:
        return workflow
    project, _ = Project.objects.get_or_create(slug=f"bench-{n}", defaults={"name": f"Bench {n}"})
    from workflows.models import Workflow, WorkflowVersion

    if not Workflow.objects.filter(project=project).exists():
        version = workflow.versions.get(number=1)
        copy = Workflow.objects.create(project=project, name=workflow.name, slug=workflow.slug)  # fmt: skip
        WorkflowVersion.objects.create(
            workflow=copy,
            number=1,
            definition=version.definition,
            input_schema=version.input_schema,
            published=True,
            published_at=version.published_at,
        )
    return Workflow.objects.get(project=project)


def time_dashboard(query: dict, repeat: int, cache_seconds: int) -> tuple[list[float], int]:
    from django.conf import settings
    from django.db import connection
    from django.test import RequestFactory
    from django.test.utils import CaptureQueriesContext

    from accounts.models import User
    from telemetry.dashboard import dashboard

    settings.SPARKOPS_DASHBOARD_CACHE_SECONDS = cache_seconds  # 0: every view reads the charts afresh
    request = RequestFactory().get("/admin/", query)
    request.user, _ = User.objects.get_or_create(email="bench-admin@sparkops.local", is_staff=True, is_superuser=True)
    timings = []
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            dashboard(request)
            timings.append((time.perf_counter() - started) * 1000)
    return timings, len(queries)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--projects", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    django_setup()
    seed(args.runs, args.projects)
    from projects.models import Project

    one = Project.objects.get(slug="bench")
    for label, query in (("all projects", {}), ("one project", {"project": str(one.pk)})):
        for charts, seconds in (("charts read afresh", 0), ("charts from the cache", 60)):
            timings, queries = time_dashboard(query, args.repeat, seconds)
            print(
                f"dashboard, {label}, {charts}: median {statistics.median(timings):.0f} ms, "
                f"max {max(timings):.0f} ms, {queries} queries (last view)"
            )


if __name__ == "__main__":
    main()
