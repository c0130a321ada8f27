from django.apps import AppConfig


class TelemetryConfig(AppConfig):
    name = "telemetry"

    def ready(self) -> None:
        from runs.signals import reaped

        from .prometheus import reaper_counted

        # Runs sits below telemetry and never imports it: it tells what the reaper did by a signal.
        reaped.connect(reaper_counted, dispatch_uid="telemetry.reaper_counted")
