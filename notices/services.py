"""The one writer of notices."""

from django.db import transaction

from .models import Notice
from .signals import published


def publish(project_id, type_: str, *, run=None, step=None, schedule=None, payload: dict | None = None) -> Notice:
    """Record a notice in the caller's transaction and tell the receivers, in that transaction."""
    with transaction.atomic(savepoint=False):
        notice = Notice.objects.create(
            project_id=project_id, type=type_, run=run, step=step, schedule=schedule, payload=payload or {}
        )
        published.send(sender=Notice, notice=notice)
    return notice
