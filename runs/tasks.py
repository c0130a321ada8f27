"""Thin Celery tasks: ids in, one engine call. Safe to run twice."""

from celery import shared_task
from django.utils import timezone

from . import signals
from .engine import core, dispatch


@shared_task(name="runs.run_advance", ignore_result=True)
def run_advance(run_id: str) -> None:
    core.advance(run_id)


@shared_task(name="runs.step_execute", ignore_result=True)
def step_execute(step_id: int) -> None:
    core.execute(step_id)


@shared_task(name="runs.reap", ignore_result=True)
def reap() -> dict:
    from .schedules import release_buffered

    counts = core.reap()
    counts["buffered_fires_started"] = release_buffered()
    signals.reaped.send(sender=reap, counts=counts)
    return counts


@shared_task(name="runs.schedule_fire", ignore_result=True)
def schedule_fire(schedule_id: str, beat_time: str | None = None) -> None:
    """Sent by beat for ``schedule:<id>``. With jitter, it sends itself again a little later,
    carrying the time beat fired so the slot is judged on time."""
    from datetime import datetime

    from . import schedules
    from .models import Schedule

    if beat_time is None:
        schedule = Schedule.objects.filter(pk=schedule_id).only("jitter_seconds").first()
        delay = schedules.jitter_delay(schedule) if schedule else 0
        # Sent again later; if the broker cannot take it, the slot fires now rather than never.
        if delay and dispatch.publish(
            schedule_fire, [schedule_id], kwargs={"beat_time": timezone.now().isoformat()}, countdown=delay
        ):
            return
    schedules.fire(schedule_id=schedule_id, now=datetime.fromisoformat(beat_time) if beat_time else None)
