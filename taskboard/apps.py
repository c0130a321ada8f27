from django.apps import AppConfig


class TaskboardConfig(AppConfig):
    name = "taskboard"
    verbose_name = "Task board"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The lower layers keep registries this app fills: they never import it.
        from agents import tools
        from runs.engine import kinds as engine_kinds
        from workflows import kinds

        from . import engine, receivers, tasks  # noqa: F401 - receivers connect, tasks register
        from .tools import EXECUTORS

        kinds.register(engine.TaskKind(), system=True)
        engine_kinds.register(engine.ENGINE_KIND)
        for executor in EXECUTORS:
            tools.register(executor)
