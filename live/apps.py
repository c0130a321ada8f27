from django.apps import AppConfig


class LiveConfig(AppConfig):
    """The live stream (GET /api/v1/sse): run events and notices as Server-Sent Events."""

    name = "live"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from notices.models import Notice
        from notices.signals import published
        from runs.models import RunEvent
        from runs.signals import events_written

        from . import schema  # noqa: F401  (registers the OpenAPI auth extension)
        from .receivers import notify_listeners

        events_written.connect(notify_listeners, sender=RunEvent, dispatch_uid="live.notify.events")
        published.connect(notify_listeners, sender=Notice, dispatch_uid="live.notify.notices")
