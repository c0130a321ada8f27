"""Enqueueing engine tasks. Always after commit, so a worker never looks for rows it cannot see.

Dispatch goes through the database: the rows already say what must run (a queued step, a queued
run), and a message only says "look now". So a publish that fails is logged and counted, never
raised into the caller: the reaper sends it again from the rows once the broker is back
(at-least-once; the claim makes a second delivery a no-op). ``retry=False`` and the broker's
socket timeouts (settings) bound how long a publish may block when the broker is down or frozen.

Tasks are sent by name: the engine never imports the tasks module, which imports the engine.
"""

import logging

from celery import Task, current_app
from django.db import transaction

log = logging.getLogger(__name__)

STEP_EXECUTE = "runs.step_execute"
RUN_ADVANCE = "runs.run_advance"


def publish(task: str | Task, args: list, **options) -> bool:
    """Send ``task`` (a registered task or its name) once, without retrying; False (logged) if the
    broker could not take it."""
    name = task if isinstance(task, str) else task.name
    try:
        # A signature by name runs through the registered task: its options, and eager mode in tests.
        current_app.signature(name, args=args).apply_async(retry=False, **options)
    except Exception as exc:  # noqa: BLE001 - any broker error: the reaper re-sends from the rows
        # Not counted in the cache metrics: on Redis the cache is down with the broker.
        log.warning("could not publish %s%s (the reaper will re-send it): %r", name, args, exc)
        return False
    return True


def step_on_commit(step_id: int, *, delay: float = 0) -> None:
    transaction.on_commit(lambda: step_now(step_id, delay=delay))


def advance_on_commit(run_id) -> None:
    transaction.on_commit(lambda: advance_now(run_id))


def step_now(step_id: int, *, delay: float = 0) -> bool:
    return publish(STEP_EXECUTE, [step_id], countdown=delay or None)


def advance_now(run_id) -> bool:
    return publish(RUN_ADVANCE, [str(run_id)])
