"""Liveness and readiness probes."""

import logging

from django.conf import settings
from django.db import connection
from django.http import JsonResponse

from telemetry.liveness import liveness

from . import __version__
from .celery import app as celery_app

log = logging.getLogger(__name__)


def health(request):
    """Liveness: the process answers. Touches nothing else, so a database outage does not get
    healthy web processes restarted."""
    return JsonResponse({"status": "ok", "app": settings.SPARKOPS_APP_NAME, "version": __version__})


def _database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "down", reported by name
        return f"{type(exc).__name__}: {exc}"
    return None


def _broker() -> str | None:
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"
    return None


def ready(request):
    """Readiness: the database and the broker answer. 503 names whatever is down, never how: the
    driver's text carries hosts, ports and user names, so it goes to the log, not to the caller
    (the probe answers anyone). ``processes`` tells whether workers and beat are alive (their
    heartbeats' age); it informs, and never makes this web process unready: a web process with
    no worker still serves reads, and restarting it would not bring a worker back."""
    failures = {name: error for name, error in (("database", _database()), ("broker", _broker())) if error}
    for name, error in failures.items():
        log.warning("readiness: %s is down: %s", name, error)
    checks = {name: ("down" if name in failures else "ok") for name in ("database", "broker")}
    body = {
        "status": "down" if failures else "ok",
        "app": settings.SPARKOPS_APP_NAME,
        "version": __version__,
        "checks": checks,
        "processes": liveness(),
    }
    return JsonResponse(body, status=503 if failures else 200)
