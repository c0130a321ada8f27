"""Thin Celery tasks for telemetry. Safe to run twice."""

from celery import shared_task

from . import rollups


@shared_task(name="telemetry.roll_up", ignore_result=True)
def roll_up() -> int:
    """A system beat entry, every SPARKOPS_ROLLUP_SECONDS: hourly roll-ups of runs."""
    return rollups.roll().hours
