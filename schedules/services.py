"""Schedules: validation, the django-celery-beat sync, and firing.

Beat only says "now, for schedule S". Which slot that is, whether it is late, whether it may
start, and the ledger row that makes it happen once, are all decided here from our own cron
reading (schedules/cron.py), so two beats, a redelivered message or beat's own DST quirks never
start two runs for one slot.
"""

import json
import logging
import random
from datetime import datetime, timedelta

from celery.schedules import crontab_parser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks

from audit.choices import Action
from audit.services import audit_record
from policies.exceptions import PolicyRefused
from projects.services import ProjectArchived, ProjectFrozen, project_require_runnable
from runs.choices import RUN_ACTIVE, RunStatus, Trigger
from runs.models import Run
from runs.services import run_start
from workflows import validation
from workflows.selectors import latest_published_version

from . import cron
from .choices import CatchupPolicy, FireOutcome, OverlapPolicy
from .models import Schedule, ScheduleFire
from .signals import paused

log = logging.getLogger(__name__)

# schedules.tasks.schedule_fire, under the name it was born with in the runs app: beat rows store it.
FIRE_TASK = "runs.schedule_fire"
TASK_PREFIX = "schedule:"
# Beat sends a little after the minute; a fire this late still counts as on time.
ON_TIME = timedelta(seconds=90)
# Slots missed while nothing fired are recorded as skipped_late, at most this many per fire.
MAX_MISSED_RECORDED = 500
MAX_JITTER_SECONDS = 3600


# ------------------------------------------------------------------------------
# Validation and saving
# ------------------------------------------------------------------------------
def schedule_errors(schedule: Schedule) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    try:
        cron.parse(schedule.cron)
    except cron.CronError as exc:
        errors["cron"] = [f"{field}: {message}" for field, message in exc.errors.items()]
    if not cron.is_timezone(schedule.timezone):
        errors["timezone"] = [f"Unknown timezone {schedule.timezone!r}; use an IANA name such as Europe/Berlin."]
    if schedule.workflow.project_id != schedule.project_id:
        errors["workflow"] = ["The workflow belongs to another project."]
    version = schedule.version
    if version is not None and (version.workflow_id != schedule.workflow_id or not version.published):
        errors["version"] = ["Pin a published version of this schedule's workflow."]
    runnable = version or latest_published_version(schedule.workflow)
    if runnable is None:
        errors.setdefault("workflow", []).append("The workflow has no published version to run.")
    elif problems := validation.input_errors(runnable.input_schema, schedule.inputs):
        errors["inputs"] = problems
    if schedule.jitter_seconds > MAX_JITTER_SECONDS:
        errors["jitter_seconds"] = [f"At most {MAX_JITTER_SECONDS} seconds."]
    return errors


@transaction.atomic
def schedule_save(*, schedule: Schedule) -> Schedule:
    """Create or update a schedule and its PeriodicTask, together."""
    errors = schedule_errors(schedule)
    if errors:
        raise ValidationError(errors)
    schedule.full_clean()
    was_enabled = Schedule.objects.filter(pk=schedule.pk).values_list("enabled", flat=True).first()
    if schedule.enabled and was_enabled is False:
        # Enabling by an edit is a resume: what was missed while disabled is not replayed.
        schedule.last_fire_at, schedule.paused_reason = timezone.now(), ""
    schedule.next_fire_at = next_fire(schedule, timezone.now())
    schedule.save()
    _sync(schedule)
    if was_enabled and not schedule.enabled:
        paused.send(sender=Schedule, schedule=schedule, reason=schedule.paused_reason, automatic=False)
    return schedule


@transaction.atomic
def schedule_delete(*, schedule: Schedule) -> None:
    task = PeriodicTask.objects.filter(name=schedule.periodic_task_name).first()
    schedule.delete()
    if task is not None:
        crontab = task.crontab
        task.delete()  # bumps the change counter through its signal
        _drop_if_unused(crontab)


@transaction.atomic
def schedule_set_enabled(*, schedule: Schedule, enabled: bool, reason: str = "", automatic: bool = False) -> Schedule:
    # The row's stored state, not the instance's: two pauses at once report one.
    if enabled:
        project_require_runnable(project_id=schedule.project_id)  # the unfreeze resumes it
    was_enabled = Schedule.objects.select_for_update().filter(pk=schedule.pk, enabled=True).exists()
    schedule.enabled = enabled
    schedule.paused_reason = "" if enabled else reason
    if enabled:
        # Resuming does not replay what was missed while paused.
        schedule.last_fire_at = timezone.now()
    schedule.next_fire_at = next_fire(schedule, timezone.now())
    schedule.save(update_fields=["enabled", "paused_reason", "last_fire_at", "next_fire_at", "updated_at"])
    _sync(schedule)
    if was_enabled and not enabled:
        paused.send(sender=Schedule, schedule=schedule, reason=reason, automatic=automatic)
    return schedule


def schedules_set_enabled(*, queryset, enabled: bool) -> int:
    """Bulk pause or resume: one UPDATE each table, then one bump so beat reloads."""
    if enabled:  # a frozen project's schedules wait for its unfreeze
        queryset = queryset.filter(project__frozen_at__isnull=True)
    with transaction.atomic():
        ids = list(queryset.values_list("pk", flat=True))
        pausing = [] if enabled else list(Schedule.objects.select_for_update().filter(pk__in=ids, enabled=True))
        now = timezone.now()
        changes = {"enabled": enabled, "updated_at": now, "paused_reason": ""}
        if enabled:
            changes["last_fire_at"] = now
        count = Schedule.objects.filter(pk__in=ids).update(**changes)
        for schedule in Schedule.objects.filter(pk__in=ids).only(
            "pk", "cron", "timezone", "enabled", "name", "project"
        ):
            # next_fire_at is per schedule: None while paused, the next slot once resumed.
            Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=next_fire(schedule, now))
            # update() sends no signal: the trail is written here.
            action = Action.RESUME if enabled else Action.PAUSE
            audit_record(
                action=action, obj=schedule, project_id=schedule.project_id, changes={"enabled": [not enabled, enabled]}
            )
        names = [f"{TASK_PREFIX}{pk}" for pk in ids]
        PeriodicTask.objects.filter(name__in=names).update(enabled=enabled)
        # QuerySet.update() skips PeriodicTask.save(): tell beat ourselves.
        PeriodicTasks.update_changed()
        for schedule in pausing:
            paused.send(sender=Schedule, schedule=schedule, reason="", automatic=False)
    return count


# ------------------------------------------------------------------------------
# The beat side
# ------------------------------------------------------------------------------
def _beat_fields(expression: str) -> dict[str, str]:
    # Beat must wake at every slot we fire, but its parser is not ours: it refuses "5/15" and a
    # weekday 7 (and then silently never loads the task), and it ANDs the two day fields where we
    # OR them. A field it reads differently is spelled out as the values we read; with both day
    # fields restricted it wakes every day at those times and fire() finds nothing due on the
    # days that do not match.
    parsed = cron.parse(expression)
    minute, hour, day, month, weekday = parsed.parts
    any_day = parsed.days_restricted and parsed.weekdays_restricted
    return {
        "minute": _for_beat(minute, parsed.minutes, 60, 0),
        "hour": _for_beat(hour, parsed.hours, 24, 0),
        "day_of_month": "*" if any_day else _for_beat(day, parsed.days, 31, 1),
        "month_of_year": _for_beat(month, parsed.months, 12, 1),
        "day_of_week": "*" if any_day else _for_beat(weekday, parsed.weekdays, 7, 0),
    }


def _for_beat(part: str, values: frozenset[int], size: int, low: int) -> str:
    """The field as written when beat reads the same values from it, else the values listed."""
    try:
        if crontab_parser(size, low).parse(part) == values:
            return part
    except (ValueError, crontab_parser.ParseException):
        pass
    return ",".join(str(value) for value in sorted(values))


def _crontab(schedule: Schedule) -> CrontabSchedule:
    fields = {**_beat_fields(schedule.cron), "timezone": schedule.timezone}
    # Not get_or_create: rows are not unique (django-celery-beat's admin or a race can add a twin),
    # and any of the twins will do.
    return CrontabSchedule.objects.filter(**fields).order_by("pk").first() or CrontabSchedule.objects.create(**fields)


def desired_task(schedule: Schedule) -> dict:
    crontab = _crontab(schedule)
    return {
        "task": FIRE_TASK,
        "crontab": crontab,
        "interval": None,
        "solar": None,
        "clocked": None,
        "args": json.dumps([str(schedule.pk)]),
        "kwargs": "{}",
        "enabled": schedule.enabled,
        "one_off": False,
        "description": f"Spark-Ops schedule {schedule.name!r} (managed; edit the schedule, not this task)",
    }


def _sync(schedule: Schedule) -> PeriodicTask:
    existing = PeriodicTask.objects.filter(name=schedule.periodic_task_name).first()
    old_crontab = existing.crontab if existing else None
    task, _ = PeriodicTask.objects.update_or_create(name=schedule.periodic_task_name, defaults=desired_task(schedule))
    if old_crontab is not None and old_crontab.pk != task.crontab_id:
        _drop_if_unused(old_crontab)
    return task


def _drop_if_unused(crontab: CrontabSchedule | None) -> None:
    # Crontab rows are shared by schedules of the same shape; drop one only when nothing uses it.
    if crontab is not None and not PeriodicTask.objects.filter(crontab=crontab).exists():
        crontab.delete()


def sync_all() -> dict[str, int]:
    """Repair drift: every schedule has its task as it should be, and no task outlives its
    schedule. Idempotent; touches only tasks named ``schedule:<id>``."""
    report = {"created": 0, "updated": 0, "deleted": 0, "unchanged": 0}
    for schedule in Schedule.objects.all():
        report[_repair(schedule)] += 1
    known = {f"{TASK_PREFIX}{pk}" for pk in Schedule.objects.values_list("pk", flat=True)}
    for task in PeriodicTask.objects.filter(name__startswith=TASK_PREFIX).exclude(name__in=known):
        crontab = task.crontab
        task.delete()
        _drop_if_unused(crontab)
        report["deleted"] += 1
    return report


def _repair(schedule: Schedule) -> str:
    task = PeriodicTask.objects.filter(name=schedule.periodic_task_name).first()
    wanted = desired_task(schedule)
    if task is None:
        _sync(schedule)
        return "created"
    current = {field: getattr(task, field) for field in wanted}
    if current == wanted:
        return "unchanged"
    _sync(schedule)
    return "updated"


# ------------------------------------------------------------------------------
# Fire times
# ------------------------------------------------------------------------------
def next_fire(schedule: Schedule, after: datetime) -> datetime | None:
    if not schedule.enabled:
        return None
    try:
        return next(cron.fires_after(cron.parse(schedule.cron), cron.zone(schedule.timezone), after), None)
    except cron.CronError:
        return None


def preview(schedule: Schedule, count: int, after: datetime | None = None) -> list[datetime]:
    fires = cron.fires_after(cron.parse(schedule.cron), cron.zone(schedule.timezone), after or timezone.now())
    return [instant for _, instant in zip(range(count), fires, strict=False)]


def _due_slots(schedule: Schedule, now: datetime) -> list[datetime]:
    """Slots after the last one handled, up to now; the newest last."""
    since = schedule.last_fire_at or (schedule.created_at - timedelta(seconds=1))
    slots = []
    for instant in cron.fires_after(cron.parse(schedule.cron), cron.zone(schedule.timezone), since):
        if instant > now:
            break
        slots.append(instant)
        if len(slots) > MAX_MISSED_RECORDED:
            slots.pop(0)
    return slots


# ------------------------------------------------------------------------------
# Firing
# ------------------------------------------------------------------------------
def fire(*, schedule_id, now: datetime | None = None) -> ScheduleFire | None:
    """What beat's message does: handle every slot due since the last one. Safe to run twice."""
    now = now or timezone.now()
    schedule = Schedule.objects.select_related("workflow", "version").filter(pk=schedule_id).first()
    if schedule is None:
        return None
    slots = _due_slots(schedule, now)
    if not slots:
        return None  # an early or repeated message: nothing new is due
    latest, missed = slots[-1], slots[:-1]
    _record(schedule, missed, FireOutcome.SKIPPED_LATE, "Missed while no scheduler was firing.")
    result = _handle_slot(schedule, latest, now)
    Schedule.objects.filter(pk=schedule.pk, last_fire_at__lt=latest).update(last_fire_at=latest)
    Schedule.objects.filter(pk=schedule.pk, last_fire_at__isnull=True).update(last_fire_at=latest)
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=next_fire(schedule, now))
    return result


def _record(schedule: Schedule, slots: list[datetime], outcome: str, reason: str) -> None:
    rows = [ScheduleFire(schedule=schedule, nominal_time=slot, outcome=outcome, reason=reason) for slot in slots]
    ScheduleFire.objects.bulk_create(rows, ignore_conflicts=True)


def _handle_slot(schedule: Schedule, slot: datetime, now: datetime) -> ScheduleFire | None:
    lateness = now - slot
    allowed = ON_TIME + timedelta(seconds=schedule.jitter_seconds)
    if schedule.catchup_policy == CatchupPolicy.LATEST_IN_WINDOW:
        allowed = max(allowed, timedelta(seconds=schedule.catchup_window_seconds))
    if not schedule.enabled:
        return _claim(schedule, slot, FireOutcome.SKIPPED_PAUSED, schedule.paused_reason or "The schedule is paused.")
    if lateness > allowed:
        return _claim(schedule, slot, FireOutcome.SKIPPED_LATE, f"{int(lateness.total_seconds())}s late.")
    return _start_for_slot(schedule, slot)


def _claim(
    schedule: Schedule, slot: datetime, outcome: str, reason: str = "", manual: bool = False
) -> ScheduleFire | None:
    """The ledger row for a slot, or None when the slot was already handled (another beat, a
    redelivered message)."""
    try:
        with transaction.atomic():
            return ScheduleFire.objects.create(
                schedule=schedule, nominal_time=slot, outcome=outcome, reason=reason, manual=manual
            )
    except IntegrityError:
        return None


def _start_for_slot(schedule: Schedule, slot: datetime, *, manual: bool = False) -> ScheduleFire | None:
    with transaction.atomic():
        # The fire row and the run commit together: either both exist or neither does.
        fire = _claim(schedule, slot, FireOutcome.STARTED, manual=manual)
        if fire is None:
            return None
        if not manual:
            if reason := _pause_reason(schedule):
                _pause(schedule, reason)
                return _settle(fire, FireOutcome.SKIPPED_PAUSED, reason)
            if (blocked := _overlap(schedule, fire)) is not None:
                return blocked
        return _start_run(schedule, fire)


def _active_runs(schedule: Schedule) -> int:
    return Run.objects.filter(schedule_fire__schedule=schedule, status__in=RUN_ACTIVE).count()


def _overlap(schedule: Schedule, fire: ScheduleFire) -> ScheduleFire | None:
    """The fire's outcome when the overlap policy holds it back; None when it may start."""
    policy, active = schedule.overlap_policy, _active_runs(schedule)
    if policy == OverlapPolicy.ALLOW or active == 0:
        return None
    if policy == OverlapPolicy.ALLOW_N:
        if active < schedule.max_active:
            return None
        return _settle(fire, FireOutcome.SKIPPED_OVERLAP, f"{active} runs active; the limit is {schedule.max_active}.")
    if policy == OverlapPolicy.BUFFER_ONE:
        waiting = schedule.fires.filter(outcome=FireOutcome.BUFFERED).exclude(pk=fire.pk).exists()
        if not waiting:
            return _settle(fire, FireOutcome.BUFFERED, "Starts when the active run ends.")
    return _settle(fire, FireOutcome.SKIPPED_OVERLAP, "A run of this schedule is still active.")


def _pause_reason(schedule: Schedule) -> str:
    limit = schedule.auto_pause_after
    if not limit:
        return ""
    # Only runs since the schedule was last changed (an edit, a resume): failures from before a
    # resume would otherwise pause it again at its very next fire.
    recent = list(
        Run.objects.filter(
            schedule_fire__schedule=schedule, schedule_fire__manual=False, queued_at__gt=schedule.updated_at
        )
        .order_by("-queued_at")
        .values_list("status", flat=True)[:limit]
    )
    if len(recent) == limit and all(status == RunStatus.FAILED for status in recent):
        return f"Paused after {limit} failed runs in a row."
    return ""


def _pause(schedule: Schedule, reason: str) -> None:
    schedule_set_enabled(schedule=schedule, enabled=False, reason=reason, automatic=True)


def _settle(fire: ScheduleFire, outcome: str, reason: str = "", run: Run | None = None) -> ScheduleFire:
    fire.outcome, fire.reason, fire.run = outcome, reason, run
    fire.save(update_fields=["outcome", "reason", "run"])
    return fire


def _start_run(schedule: Schedule, fire: ScheduleFire) -> ScheduleFire:
    # No savepoint of our own around run_start: it writes nothing before a ValidationError, rolls
    # its own writes back on a refusal, and then records the refusal's decision, which a savepoint
    # here would roll back too.
    try:
        run, _ = run_start(
            workflow=schedule.workflow,
            version=schedule.version,
            inputs=schedule.inputs,
            user=schedule.created_by,
            trigger=Trigger.SCHEDULE,
            title=f"{schedule.name} @ {fire.nominal_time:%Y-%m-%d %H:%M} UTC",
        )
    except ValidationError as exc:
        messages = exc.message_dict if hasattr(exc, "error_dict") else {"": exc.messages}
        reason = "; ".join(f"{k}: {' '.join(v)}".lstrip(": ") for k, v in messages.items())
        log.warning("schedule %s could not start a run: %s", schedule.pk, reason)
        return _settle(fire, FireOutcome.FAILED, reason[:500])
    except PolicyRefused as refusal:
        log.warning("schedule %s was refused a run: %s", schedule.pk, refusal.reason)
        return _settle(fire, FireOutcome.BLOCKED, refusal.reason[:500])
    except (ProjectArchived, ProjectFrozen) as refusal:  # the schedule stays enabled: unarchiving resumes it
        return _settle(fire, FireOutcome.BLOCKED, refusal.message[:500])
    return _settle(fire, FireOutcome.STARTED, "", run)


def trigger(*, schedule: Schedule) -> ScheduleFire:
    """Run now, outside the clock; recorded as a manual fire."""
    fire = _start_for_slot(schedule, timezone.now(), manual=True)
    if fire is None:  # the same microsecond twice: vanishingly rare, but never a second run
        raise ValidationError("This schedule was just triggered; try again.")
    return fire


def release_buffered() -> int:
    """Start buffered fires whose schedule has no active run any more (the release_buffered task,
    as often as the reaper)."""
    started = 0
    for fire in ScheduleFire.objects.filter(outcome=FireOutcome.BUFFERED).select_related("schedule__workflow"):
        if not fire.schedule.enabled or _active_runs(fire.schedule):
            continue  # a paused schedule's buffered fire waits for its resume
        with transaction.atomic():
            # Conditional: two reapers must not both start it.
            if not ScheduleFire.objects.filter(pk=fire.pk, outcome=FireOutcome.BUFFERED).update(
                outcome=FireOutcome.STARTED
            ):
                continue
            _start_run(fire.schedule, fire)
            started += 1
    return started


def jitter_delay(schedule: Schedule) -> float:
    return random.uniform(0, schedule.jitter_seconds) if schedule.jitter_seconds else 0.0  # noqa: S311 - not crypto
