"""The kill switch. Freezing a project stops everything it would spend money on, in one move:
its schedules are paused (and remembered as paused by the freeze), its active runs cancelled,
and, if asked, its API keys revoked; while frozen, no run, retry or schedule fire starts in it
(``projects.services.project_require_runnable``, which the run and schedule services check).
Unfreezing resumes only the schedules the freeze paused. It lives here, above runs and
schedules, because it drives both; the project only holds the flag."""

from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from accounts.models import ApiKey
from accounts.services import api_key_revoke
from audit.choices import Action
from audit.services import audit_record
from projects.models import Project
from runs.choices import RUN_ACTIVE, RunStatus
from runs.models import Run
from runs.services import TransitionRefused, run_cancel
from sparkops.lib.errors import Conflict

from .models import Schedule
from .services import schedule_set_enabled

FREEZE_PAUSE = "Paused by the project's freeze: {reason}"


@dataclass
class FreezeOutcome:
    schedules: list[str] = field(default_factory=list)
    runs_cancelled: list[str] = field(default_factory=list)
    api_keys_revoked: list[str] = field(default_factory=list)


def project_freeze(*, project: Project, reason: str, revoke_api_keys: bool = False) -> FreezeOutcome:
    """Freeze, then cancel what runs. The flag commits first, so no run starts behind the sweep."""
    outcome = FreezeOutcome()
    with transaction.atomic():
        # Conditional: two admins freezing at once must not both pause (and remember) schedules.
        if not Project.objects.filter(pk=project.pk, frozen_at__isnull=True).update(
            frozen_at=timezone.now(), frozen_reason=reason
        ):
            raise Conflict("The project is already frozen; unfreeze it first to freeze it again.")
        project.refresh_from_db(fields=["frozen_at", "frozen_reason"])
        for schedule in Schedule.objects.select_for_update().filter(project=project, enabled=True):
            schedule_set_enabled(schedule=schedule, enabled=False, reason=FREEZE_PAUSE.format(reason=reason)[:300])
            Schedule.objects.filter(pk=schedule.pk).update(paused_by_freeze=True)
            outcome.schedules.append(str(schedule.pk))
        if revoke_api_keys:
            for key in ApiKey.objects.filter(project=project, revoked_at__isnull=True):
                api_key_revoke(key=key)
                outcome.api_keys_revoked.append(str(key.pk))
        changes = {"frozen_reason": ["", reason], "schedules_paused": [None, outcome.schedules]}
        audit_record(action=Action.FREEZE, obj=project, project_id=project.pk, changes=changes)
    outcome.runs_cancelled = _cancel_active(project)
    return outcome


def _cancel_active(project: Project) -> list[str]:
    cancelled = []
    for run in Run.objects.filter(project=project, status__in=RUN_ACTIVE - {RunStatus.CANCELLING}):
        try:
            run_cancel(run=run)
        except TransitionRefused:
            continue  # it finished meanwhile
        cancelled.append(str(run.pk))
    return cancelled


def project_unfreeze(*, project: Project) -> FreezeOutcome:
    """Lift the freeze and resume the schedules it paused; those paused before stay paused."""
    outcome = FreezeOutcome()
    with transaction.atomic():
        if not Project.objects.filter(pk=project.pk, frozen_at__isnull=False).update(frozen_at=None, frozen_reason=""):
            raise Conflict("The project is not frozen.")
        was = project.frozen_reason
        project.refresh_from_db(fields=["frozen_at", "frozen_reason"])
        for schedule in Schedule.objects.select_for_update().filter(project=project, paused_by_freeze=True):
            Schedule.objects.filter(pk=schedule.pk).update(paused_by_freeze=False)
            if not schedule.enabled:
                schedule_set_enabled(schedule=schedule, enabled=True)
                outcome.schedules.append(str(schedule.pk))
        changes = {"frozen_reason": [was, ""], "schedules_resumed": [None, outcome.schedules]}
        audit_record(action=Action.UNFREEZE, obj=project, project_id=project.pk, changes=changes)
    return outcome
