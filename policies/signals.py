"""Signals policies sends for the apps above it, which may listen but which policies never imports."""

from django.dispatch import Signal

#: Sent inside the transaction that reserved a call's estimated cost, under the budgets' locks,
#: with ``project_id`` and ``budgets`` (the budget policies the call counts against). A listener
#: that reads the budgets' use sees the reservation.
spend_reserved = Signal()

#: Sent when a run's start was refused by a blocking policy and the decision recorded (at most
#: once per policy every 10 seconds), with ``project_id``, ``policy`` and ``reason``.
admission_refused = Signal()
