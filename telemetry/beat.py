"""Beat's scheduler: django-celery-beat's, plus a heartbeat on its tick (telemetry/liveness.py)."""

import socket
import time

from django_celery_beat.schedulers import DatabaseScheduler

from . import liveness


class Scheduler(DatabaseScheduler):
    """Ticks every few seconds (at most ``max_interval``); beats at most once per interval."""

    _last_beat = 0.0

    def tick(self, *args, **kwargs):
        now = time.monotonic()
        if now - self._last_beat >= liveness.interval() / 2:
            self._last_beat = now
            liveness.beat(liveness.BEAT_KEY, socket.gethostname())
        return super().tick(*args, **kwargs)
