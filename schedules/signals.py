"""Signals schedules sends for the apps above it, which may listen but which schedules never imports."""

from django.dispatch import Signal

#: Sent inside the transaction that pauses a schedule (a person, an admin action, or the
#: auto-pause after failed runs), with ``schedule``, ``reason`` and ``automatic``. Only a schedule
#: that was enabled is reported: pausing a paused schedule says nothing.
paused = Signal()
