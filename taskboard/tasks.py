"""Thin Celery tasks: one service call. Safe to run twice."""

from celery import shared_task

from . import services


@shared_task(name="taskboard.reap_sandboxes", ignore_result=True)
def reap_sandboxes() -> dict:
    """Sent by beat (system entry): destroys idle, ended and orphaned sandboxes."""
    return services.sandboxes_reap()
