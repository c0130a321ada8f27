"""Thin Celery tasks for accounts."""

from celery import shared_task
from django.core.management import call_command


@shared_task(name="accounts.flush_expired_tokens", ignore_result=True)
def flush_expired_tokens() -> None:
    """A system beat entry, nightly: simplejwt's outstanding (and so blacklisted) refresh tokens
    past their expiry, which nothing reads any more, with simplejwt's own command."""
    call_command("flushexpiredtokens")
