"""The wake-up of the live stream on PostgreSQL: a NOTIFY sent in the transaction that writes
run events or notices. PostgreSQL delivers it when (and only if) that transaction commits, once
per transaction however many rows it wrote; the rows themselves are read from their tables. So
one NOTIFY per transaction is enough: later writes in the same transaction send none."""

from django.db import connection, transaction

CHANNEL = "sparkops_live"


def notify_listeners(**kwargs) -> None:
    if connection.vendor != "postgresql":
        return
    if connection.in_atomic_block and _notified_in_this_transaction():
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, '')", [CHANNEL])
    if connection.in_atomic_block:
        # A marker among the transaction's commit callbacks: Django drops it with the transaction
        # (or with the savepoint whose rollback also drops the NOTIFY), so the next one notifies.
        transaction.on_commit(_notified)


def _notified() -> None:
    """The marker: nothing to do at commit, PostgreSQL delivers the NOTIFY itself."""


def _notified_in_this_transaction() -> bool:
    return any(callback is _notified for _, callback, _ in connection.run_on_commit)
