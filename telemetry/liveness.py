"""Are the Celery workers and beat alive? Each writes a heartbeat to the cache (Redis, or the file
cache of the embedded default, which every local process shares); ``liveness()`` reads their ages.

- A worker beats from its consumer's timer (``WorkerHeartbeat``, a consumer bootstep added in
  sparkops/celery.py): the loop that takes messages is the one that beats, so a wedged consumer
  goes quiet even if its process lives. Any worker's beat counts: "ok" means one is alive.
- Beat beats from its scheduler's tick (telemetry/beat.py), every few seconds.

Reading costs one cache round trip, remembered for ``CACHE_SECONDS`` per process, so a probe
hammering ``/health/ready`` never waits on a down cache more than once per period.
"""

import contextlib
import socket
import threading
import time

from celery import bootsteps
from django.conf import settings
from django.core.cache import cache

WORKER_KEY = "sparkops:liveness:worker"
BEAT_KEY = "sparkops:liveness:beat"
CACHE_SECONDS = 2.0
#: A heartbeat older than LATE intervals is late; older than DOWN intervals, the process is down.
LATE, DOWN = 2.5, 6
STATES = ("ok", "late", "down", "unknown")

_memo: dict = {}
_memo_lock = threading.Lock()


def interval() -> float:
    return settings.SPARKOPS_HEARTBEAT_SECONDS


def beat(key: str, who: str) -> None:
    """Record that ``who`` is alive now. Never raises: a down cache must not stop a worker."""
    with contextlib.suppress(Exception):  # the cache is down: readers will say so
        cache.set(key, {"at": time.time(), "who": who}, timeout=None)


def liveness() -> dict:
    """``{"worker": {"state", "age_seconds", "detail"}, "beat": {...}}``; state is one of
    ok / late / down / unknown (no heartbeat ever recorded, or the cache cannot be read)."""
    now = time.monotonic()
    with _memo_lock:
        if _memo and now - _memo["read_at"] < CACHE_SECONDS:
            return _memo["value"]
    value = _read()
    with _memo_lock:
        _memo.update(read_at=now, value=value)
    return value


def forget() -> None:
    """Read afresh on the next call (tests; a process whose settings changed)."""
    with _memo_lock:
        _memo.clear()


def _read() -> dict:
    try:
        found = cache.get_many([WORKER_KEY, BEAT_KEY])
    except Exception as exc:  # noqa: BLE001 - any cache failure: we cannot tell
        detail = f"the cache could not be read ({type(exc).__name__})"
        return {name: _state("unknown", None, detail) for name in ("worker", "beat")}
    return {"worker": _judge(found.get(WORKER_KEY), "worker"), "beat": _judge(found.get(BEAT_KEY), "beat")}


def _judge(record: dict | None, name: str) -> dict:
    if not record:
        return _state("unknown", None, f"no {name} heartbeat recorded yet")
    age = max(0.0, time.time() - record["at"])
    state = "ok" if age <= LATE * interval() else "late" if age <= DOWN * interval() else "down"
    return _state(state, round(age, 1), f"last heartbeat from {record['who']}")


def _state(state: str, age: float | None, detail: str) -> dict:
    return {"state": state, "age_seconds": age, "detail": detail}


class WorkerHeartbeat(bootsteps.StartStopStep):
    """A consumer bootstep: beat every interval from the consumer's own timer."""

    def __init__(self, c, **kwargs) -> None:
        self.timer_entry = None
        super().__init__(c, **kwargs)

    def start(self, c) -> None:
        who = c.hostname or socket.gethostname()
        beat(WORKER_KEY, who)
        self.timer_entry = c.timer.call_repeatedly(interval(), beat, (WORKER_KEY, who), priority=10)

    def stop(self, c) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None

    shutdown = stop
