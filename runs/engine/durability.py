"""Writing what a step learned through a database blip.

A step's call may have had a side effect (an HTTP POST, a billed completion) by the time its result
is written. If that write is lost with a dropped connection, the step would run again after its
lease and repeat the side effect. So a worker that holds a result keeps trying to write it, on a
fresh connection, for as long as the step is its own (its lease), and at least a short while.
"""

import logging
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime
from typing import TypeVar

from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django.utils import timezone

log = logging.getLogger(__name__)

T = TypeVar("T")

# A write is tried again for at least this long (a restart or a failover takes seconds)...
RETRY_AT_LEAST_SECONDS = 30.0
# ...waiting this long at first, doubling up to the cap.
FIRST_DELAY_SECONDS = 0.25
MAX_DELAY_SECONDS = 4.0


def durably(write: Callable[[], T], *, until: datetime | None = None) -> T:
    """``write()`` (one transaction, or a read between a call's answer and its record), tried
    again on a fresh connection when the database is unreachable or drops the connection, until
    ``until`` (the step's lease) or for RETRY_AT_LEAST_SECONDS, whichever is later; then the
    error is raised. Inside a transaction it is tried once: the outermost caller retries it all."""
    if connection.in_atomic_block:
        return write()
    give_up = time.monotonic() + max(RETRY_AT_LEAST_SECONDS, _seconds_until(until))
    delay = FIRST_DELAY_SECONDS
    while True:
        try:
            return write()
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() + delay > give_up:
                raise
            log.warning("database write failed (%s); trying again in %.2f s", type(exc).__name__, delay)
            _drop_connection()
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_SECONDS)


def _seconds_until(moment: datetime | None) -> float:
    return (moment - timezone.now()).total_seconds() if moment else 0.0


def _drop_connection() -> None:
    # The next query opens a new connection; closing a dead one may itself fail.
    with suppress(DatabaseError):
        connection.close()
