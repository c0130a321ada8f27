"""End to end, at the worst moments: a worker killed between a step's outcome and the run's advance,
the database dropping the worker's connections mid-call, a call that kills its worker every time.
Real Celery worker processes, Redis and PostgreSQL; skipped without them (see test_e2e_worker)."""

import time

import psycopg
from django.db import connection

from agents import services as agent_services
from agents.models import Tool
from runs.choices import RUN_TERMINAL, EventType, RunStatus, StepStatus
from runs.engine import core
from runs.models import Run, RunEvent

from . import test_e2e_worker as e2e
from .e2e_support import SideEffects, Worker, database_url
from .test_e2e_worker import publish, start, statuses, wait_for

# The worker, fake provider and catalog of the other end-to-end tests, and their skip marks.
pytestmark = e2e.pytestmark
fake, worker, catalog = e2e.fake, e2e.worker, e2e.catalog


def finish(run_ids: list, timeout: float) -> list[Run]:
    """Wait for every run to end, running the reaper as its beat entry would (only more often)."""
    deadline = time.monotonic() + timeout
    while Run.objects.filter(pk__in=run_ids).exclude(status__in=RUN_TERMINAL).exists():
        assert time.monotonic() < deadline, [statuses(run) for run in Run.objects.filter(pk__in=run_ids)]
        core.reap()
        time.sleep(0.3)
    return [Run.objects.get(pk=run_id) for run_id in run_ids]


def until(condition, timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


def terminate_other_backends() -> int:
    """Drop every connection to the test database but this test's own: the worker's."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return len(cursor.fetchall())


def test_a_worker_killed_between_a_steps_outcome_and_the_advance_strands_nothing(worker, fake, catalog, tmp_path):
    workflow = publish(
        catalog,
        "gap",
        [
            {"key": "first", "kind": "agent", "agent": "smart", "prompt": "first SLOW=1 of the gap"},
            {
                "key": "second",
                "kind": "agent",
                "agent": "smart",
                "prompt": "second of the gap",
                "depends_on": ["first"],
            },
        ],
    )
    run_id = start(catalog, workflow)
    with psycopg.connect(database_url()) as locker:
        # Hold the next step's row: the worker's advance, which queues it, blocks right after the
        # first step's outcome is committed.
        locker.execute("SELECT 1 FROM runs_runstep WHERE run_id = %s AND key = 'second' FOR UPDATE", [run_id])
        step = Run.objects.get(pk=run_id).steps.get(key="first")
        until(lambda: type(step).objects.get(pk=step.pk).status == StepStatus.SUCCEEDED, what="the first outcome")
        until(waiting_on_a_lock, what="the advance to block")
        worker.kill()
        locker.rollback()

    replacement = Worker(tmp_path / "replacement.log").start()
    try:
        (run,) = finish([run_id], timeout=60)
    finally:
        replacement.stop()

    assert run.status == RunStatus.SUCCEEDED, statuses(run)
    assert fake.prompts["first SLOW=1 of the gap"] == 1
    assert fake.prompts["second of the gap"] == 1
    assert list(run.steps.values_list("attempt", flat=True)) == [1, 1]


def test_connections_dropped_mid_call_repeat_no_side_effect_and_the_run_finishes(worker, fake, catalog):
    effects = SideEffects(delay=1.5)
    try:
        tool = Tool(
            project=catalog.project,
            slug="notify",
            name="Notify",
            kind="http",
            config={"method": "POST", "url": effects.url, "timeout": 10},
        )
        agent_services.tool_save(tool=tool)
        workflow = publish(
            catalog,
            "blip",
            [
                {"key": "post", "kind": "tool", "tool": "notify", "input": {"n": 1}, "timeout_seconds": 20},
                {
                    "key": "think",
                    "kind": "agent",
                    "agent": "smart",
                    "prompt": "think SLOW=1.5 after the blip",
                    "depends_on": ["post"],
                    "timeout_seconds": 20,
                },
            ],
        )
        begun = time.monotonic()
        run_id = start(catalog, workflow)
        until(lambda: len(effects.requests) == 1, what="the POST")
        assert terminate_other_backends() > 0  # while the POST is in flight
        until(lambda: fake.prompts["think SLOW=1.5 after the blip"] == 1, what="the provider call")
        assert terminate_other_backends() > 0  # while the completion is in flight
        (run,) = finish([run_id], timeout=60)
    finally:
        effects.stop()

    assert run.status == RunStatus.SUCCEEDED, statuses(run)
    assert time.monotonic() - begun < 60
    assert len(effects.requests) == 1
    assert fake.prompts["think SLOW=1.5 after the blip"] == 1
    assert list(run.steps.values_list("attempt", flat=True)) == [1, 1]


def test_a_call_that_kills_its_worker_runs_three_times_then_fails_as_poison(worker, fake, catalog):
    poison = publish(
        catalog,
        "poison",
        [{"key": "boom", "kind": "agent", "agent": "smart", "prompt": "KILL_CALLER boom", "timeout_seconds": 2}],
    )
    calm = publish(
        catalog,
        "calm",
        [
            {"key": "one", "kind": "agent", "agent": "smart", "prompt": "calm one SLOW=0.5"},
            {"key": "two", "kind": "agent", "agent": "smart", "prompt": "calm two SLOW=0.5", "depends_on": ["one"]},
        ],
    )
    poisoned_id, calm_id = start(catalog, poison), start(catalog, calm)

    poisoned, calmed = finish([poisoned_id, calm_id], timeout=90)

    assert fake.prompts["KILL_CALLER boom"] == core.POISON_AFTER_LOST_WORKERS == 3
    assert poisoned.status == RunStatus.FAILED
    assert poisoned.error["step"] == "boom"
    assert poisoned.error["type"] == "Poison"
    assert "died 3 times" in poisoned.error["message"]
    step = poisoned.steps.get()
    assert (step.attempt, step.lost_workers) == (4, 3)
    # Every execution's start is in the log, though none of them wrote anything else.
    started = RunEvent.objects.filter(run=poisoned, type=EventType.STEP_STARTED).values_list("payload", flat=True)
    assert [event["attempt"] for event in started] == [1, 2, 3]
    # The other run on the same worker went through, each step once.
    assert calmed.status == RunStatus.SUCCEEDED, statuses(calmed)
    assert (fake.prompts["calm one SLOW=0.5"], fake.prompts["calm two SLOW=0.5"]) == (1, 1)
    assert wait_for(calm_id, RUN_TERMINAL).status == RunStatus.SUCCEEDED
