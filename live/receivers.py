"""The wake-up of the live stream on PostgreSQL: a NOTIFY sent in the transaction that writes
run events or notices. PostgreSQL delivers it when (and only if) that transaction commits, once
per transaction however many rows it wrote; the rows themselves are read from their tables."""

from django.db import connection

CHANNEL = "sparkops_live"


def notify_listeners(**kwargs) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [CHANNEL])
