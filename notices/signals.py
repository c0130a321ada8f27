"""Signals notices sends for the apps above it (webhooks, the live stream)."""

from django.dispatch import Signal

#: Sent inside the transaction that wrote the notice, with ``notice``. Receivers that write rows
#: (webhook deliveries) write them in that transaction.
published = Signal()
