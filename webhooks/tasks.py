"""Thin Celery tasks: ids in, one service call. Safe to run twice."""

from celery import shared_task

from . import services


@shared_task(name="webhooks.deliver", ignore_result=True)
def deliver(delivery_id: str) -> None:
    services.delivery_attempt(delivery_id=delivery_id)


@shared_task(name="webhooks.reap", ignore_result=True)
def reap() -> int:
    return services.deliveries_reap()
