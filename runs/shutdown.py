"""Graceful worker shutdown: a worker told to stop (SIGTERM: a deploy, compose, Kubernetes) lets
its running steps finish for up to ``SPARKOPS_WORKER_STOP_GRACE_SECONDS``, and hands back the
ones still running then, so they are re-dispatched at once rather than after their lease.

On SIGTERM Celery stops taking messages and waits for running tasks (warm shutdown). At that
moment this module, in the worker's main process, shortens the lease of each step the worker is
running to the grace period and publishes that step again with the grace as countdown: a step
that finishes in time makes that message claim nothing; a step still running when the grace ends
is stopped (the worker turns its own shutdown cold) and the message starts it on another worker.
"""

import logging
import os
import signal
import threading
import time
from datetime import timedelta

from celery.signals import worker_shutting_down
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from .choices import EventType, StepStatus

log = logging.getLogger(__name__)


def _running_step_ids() -> list[int]:
    from celery.worker import state

    for _ in range(10):
        try:
            # A WeakSet that pool threads shrink as tasks end: copying it can race with them.
            requests = list(state.active_requests)
        except RuntimeError:
            continue
        return [int(request.args[0]) for request in requests if request.name == "runs.step_execute"]
    return []


def hand_back(step_ids: list[int], grace: float) -> None:
    """Let another worker claim these steps once the grace has passed, if they are still running."""
    from .engine import dispatch
    from .models import RunStep

    until = timezone.now() + timedelta(seconds=grace)
    step_ids = list(step_ids)
    try:
        # A task whose step has settled may be running the step that came next in its run, inline
        # (engine.core.execute): then the only running step of that run, so that one is handed back.
        settled = RunStep.objects.filter(pk__in=step_ids).exclude(status=StepStatus.RUNNING).values("run_id")
        following = RunStep.objects.filter(run_id__in=settled, status=StepStatus.RUNNING)
        step_ids += [pk for pk in following.values_list("pk", flat=True) if pk not in step_ids]
        # Only shortened: a lease already ending sooner is left as it is.
        for step in RunStep.objects.filter(pk__in=step_ids, status=StepStatus.RUNNING, lease_expires_at__gt=until):
            shorten_lease(step, until)
    finally:
        connection.close()  # this thread's connection
    for step_id in step_ids:
        dispatch.step_now(step_id, delay=grace + 1)


def shorten_lease(step, until) -> None:
    """The step's lease ends at ``until``, and the log says it was handed back: the takeover that
    follows is not counted as a crash towards poison."""
    from .engine.transitions import emit, reserve_sequences
    from .models import RunStep

    with transaction.atomic():
        reserve_sequences(step.run_id, 0)  # the run's row before the step's, as the engine locks them
        shortened = RunStep.objects.filter(pk=step.pk, status=StepStatus.RUNNING, attempt=step.attempt).update(
            lease_expires_at=until
        )
        if shortened:
            emit(step.run_id, EventType.STEP_HANDED_BACK, step=step, payload={"key": step.key, "attempt": step.attempt})


def _enforce(grace: float) -> None:
    step_ids = _running_step_ids()
    if not step_ids:
        return
    log.warning("shutting down: %s running step(s) get %s s to finish: %s", len(step_ids), grace, step_ids)
    hand_back(step_ids, grace)
    time.sleep(grace)
    log.warning("shutdown grace over: stopping, steps still running are re-dispatched")
    os.kill(os.getpid(), signal.SIGQUIT)  # cold shutdown: the children stop, the process exits


@worker_shutting_down.connect
def _on_worker_shutting_down(sig=None, how=None, exitcode=None, **kwargs) -> None:
    if how != "Warm":
        return
    # Celery sends this from its signal handler: no database or broker work here, a thread does it.
    grace = settings.SPARKOPS_WORKER_STOP_GRACE_SECONDS
    threading.Thread(target=_enforce, args=[grace], name="shutdown-grace", daemon=True).start()
