from django.apps import AppConfig


class TelemetryConfig(AppConfig):
    name = "telemetry"

    def ready(self) -> None:
        from celery import signals as celery_signals

        from runs.signals import reaped

        from . import logs, tracing
        from .prometheus import reaper_counted

        # Runs sits below telemetry and never imports it: it tells what the reaper did by a signal.
        reaped.connect(reaper_counted, dispatch_uid="telemetry.reaper_counted")
        logs.connect()
        # Before the web server loads its middleware: the request spans' middleware goes first.
        tracing.configure()
        # A prefork child inherits the set-up; it flushes its own spans before it exits.
        celery_signals.worker_process_init.connect(tracing.process_started, dispatch_uid="telemetry.tracing.init")
        celery_signals.worker_process_shutdown.connect(tracing.process_stopping, dispatch_uid="telemetry.tracing.stop")
