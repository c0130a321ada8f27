from django.apps import AppConfig


class LiveConfig(AppConfig):
    """The live stream (GET /api/v1/sse): run events and notices as Server-Sent Events."""

    name = "live"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import schema  # noqa: F401  (registers the OpenAPI auth extension)
