"""Thin Celery tasks: ids in, one engine call. Safe to run twice."""

import structlog
from celery import shared_task

from . import signals
from .engine import core


@shared_task(name="runs.run_advance", ignore_result=True)
def run_advance(run_id: str) -> None:
    structlog.contextvars.bind_contextvars(run_id=str(run_id))  # on this task's log lines
    core.advance(run_id)


@shared_task(name="runs.step_execute", ignore_result=True)
def step_execute(step_id: int) -> None:
    core.execute(step_id)


@shared_task(name="runs.reap", ignore_result=True)
def reap() -> dict:
    counts = core.reap()
    signals.reaped.send(sender=reap, counts=counts)
    return counts
