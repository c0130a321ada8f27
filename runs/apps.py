from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # shutdown connects the worker's graceful stop. tasks registers the engine's tasks in every
        # process: the engine sends them by name, and a name the registry knows runs through its
        # task (its options, and eager mode in tests).
        from . import shutdown, tasks  # noqa: F401
