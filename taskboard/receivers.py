"""What the task board hears from runs: a task run that ended settles its task."""

from django.dispatch import receiver

from runs import signals
from runs.choices import EventType, RunStatus

from . import services

_ENDS = {
    EventType.RUN_SUCCEEDED: RunStatus.SUCCEEDED,
    EventType.RUN_FAILED: RunStatus.FAILED,
    EventType.RUN_CANCELLED: RunStatus.CANCELLED,
}


@receiver(signals.events_written, dispatch_uid="taskboard.run_ended")
def run_ended(sender, run_id, events, **kwargs) -> None:
    for event in events:
        if event.type in _ENDS:
            services.task_settle_run(run_id=run_id, status=_ENDS[event.type])
