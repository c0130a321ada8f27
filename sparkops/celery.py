"""The Celery app. Tasks carry ids only; the database is the source of truth."""

import os

from celery import Celery, signals
from django_structlog.celery.steps import DjangoStructLogInitStep

from telemetry.liveness import WorkerHeartbeat

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sparkops.settings.local")

app = Celery("sparkops")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Log lines with the task's id (and the request id of whoever queued it); a heartbeat from the
# consumer's loop for /health/ready (telemetry/liveness.py).
app.steps["worker"].add(DjangoStructLogInitStep)
app.steps["consumer"].add(WorkerHeartbeat)


@signals.task_prerun.connect
def _check_connections(task=None, **kwargs) -> None:
    """What Django does at the start of each request, before each task: drop a connection that
    is broken or older than CONN_MAX_AGE and health-check the others on first use. Celery's own
    fix-up, with CELERY_DB_REUSE_MAX set, keeps the connection but never checks it. Not for eager
    tasks: they may run inside the caller's transaction."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


@app.task(name="sparkops.noop", ignore_result=True)
def noop() -> None:
    """Does nothing: what the worker and the broker cost per task alone (bench/engine.py's ceiling)."""
