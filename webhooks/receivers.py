"""Webhooks listen to notices: each notice's deliveries are written in its transaction."""

from django.dispatch import receiver

from notices.signals import published

from . import services


@receiver(published, dispatch_uid="webhooks.outbox")
def _on_notice(sender, notice, **kwargs) -> None:
    services.deliveries_for_notice(notice=notice)
