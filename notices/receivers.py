"""Where notices listen to the apps below them: each receiver hands over to a service, in the
transaction of the cause (runs' events, a schedule's pause, a policy's reservation or refusal)."""

from django.dispatch import receiver

from policies.signals import admission_refused, spend_reserved
from runs.signals import events_written
from schedules.signals import paused

from . import services


@receiver(events_written, dispatch_uid="notices.events_written")
def _on_events(sender, run_id, events, **kwargs) -> None:
    services.notices_from_events(run_id=run_id, events=events)


@receiver(paused, dispatch_uid="notices.schedule_paused")
def _on_schedule_paused(sender, schedule, reason, automatic, **kwargs) -> None:
    services.notice_schedule_paused(schedule=schedule, reason=reason, automatic=automatic)


@receiver(spend_reserved, dispatch_uid="notices.spend_reserved")
def _on_spend_reserved(sender, project_id, budgets, call=None, **kwargs) -> None:
    services.notices_for_budgets(project_id=project_id, budgets=budgets, call=call)


@receiver(admission_refused, dispatch_uid="notices.admission_refused")
def _on_admission_refused(sender, project_id, policy, reason, **kwargs) -> None:
    services.notice_admission_refused(project_id=project_id, policy=policy, reason=reason)
