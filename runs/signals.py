"""Signals runs sends for the apps above it, which may listen but which runs never imports."""

from django.dispatch import Signal

#: Sent by the ``runs.reap`` task after each pass, with ``counts``: what the pass did, e.g.
#: ``{"steps": 2, "runs": 0, "reservations": 1}``. Telemetry adds them to the reaper counters.
reaped = Signal()

#: Sent by the engine inside the transaction that appends events to a run's log, with
#: ``run_id`` and ``events`` (the RunEvent rows, numbered). A receiver that writes rows (an
#: outbox, a notice) writes them in that same transaction: they commit or vanish with the events.
#: Receivers must be cheap and must not swallow database errors.
events_written = Signal()
