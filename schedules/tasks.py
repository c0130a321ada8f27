"""Thin Celery tasks: ids in, one service call. Safe to run twice."""

from datetime import datetime

from celery import shared_task
from django.utils import timezone

from runs import signals
from runs.engine import dispatch

from . import retention, services
from .models import Schedule


# The name is the one this task had in the runs app: every schedule's PeriodicTask row stores it
# (services.FIRE_TASK), so renaming it would leave beat sending a task no worker knows.
@shared_task(name="runs.schedule_fire", ignore_result=True)
def schedule_fire(schedule_id: str, beat_time: str | None = None) -> None:
    """Sent by beat for ``schedule:<id>``. With jitter, it sends itself again a little later,
    carrying the time beat fired so the slot is judged on time."""
    if beat_time is None:
        schedule = Schedule.objects.filter(pk=schedule_id).only("jitter_seconds").first()
        delay = services.jitter_delay(schedule) if schedule else 0
        # Sent again later; if the broker cannot take it, the slot fires now rather than never.
        if delay and dispatch.publish(
            schedule_fire, [schedule_id], kwargs={"beat_time": timezone.now().isoformat()}, countdown=delay
        ):
            return
    services.fire(schedule_id=schedule_id, now=datetime.fromisoformat(beat_time) if beat_time else None)


@shared_task(name="schedules.release_buffered", ignore_result=True)
def release_buffered() -> int:
    """A system beat entry, as often as the reaper: start buffered fires whose run has ended."""
    started = services.release_buffered()
    # Still one of the reaper's actions, as when the reaper released buffered fires itself: /metrics
    # shows it as sparkops_reaper_actions_total{action="buffered_fires_started"}.
    signals.reaped.send(sender=release_buffered, counts={"buffered_fires_started": started})
    return started


@shared_task(name="schedules.prune", ignore_result=True)
def prune() -> int:
    """A system beat entry, nightly: history past its retention, in small batches."""
    return sum(line.rows for line in retention.prune())
