"""Signals runs sends for the apps above it, which may listen but which runs never imports."""

from django.dispatch import Signal

#: Sent by the ``runs.reap`` task after each pass, with ``counts``: what the pass did, e.g.
#: ``{"steps": 2, "runs": 0, "reservations": 1}``. Telemetry adds them to the reaper counters.
reaped = Signal()
