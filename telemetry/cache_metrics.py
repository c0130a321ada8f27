"""Counters and a request-latency histogram kept in the Django cache, so every web and worker
process adds to the same numbers and ``GET /metrics`` reads them from any process (no
prometheus_client multiprocess mode, no files per process).

On Redis (production) an increment is atomic. On the embedded default's file cache it is a read
and a write, so increments made at the same instant by two processes can be lost: good enough
for a dashboard, never for accounting. Metrics are best effort: a cache failure is logged and
never fails the request or task that was being counted.
"""

import logging
from collections.abc import Iterable

from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.core.cache.backends.base import BaseCache

log = logging.getLogger(__name__)

PREFIX = "metrics"
# Upper bounds in seconds (Prometheus' defaults); one more slot counts everything slower.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# ------------------------------------------------------------------------------
# Counters
# ------------------------------------------------------------------------------
def add(name: str, amount: int = 1) -> None:
    """Add to the counter ``name``; counters never expire."""
    if amount:
        try:
            _incr(f"{PREFIX}:{name}", amount)
        except Exception:  # a metric must never break what it measures
            log.warning("could not add to the metric %s", name, exc_info=True)


def counters(names: Iterable[str]) -> dict[str, int]:
    """The counters' values (0 for one never added to)."""
    names = list(names)
    values = cache.get_many([f"{PREFIX}:{name}" for name in names])
    return {name: values.get(f"{PREFIX}:{name}", 0) for name in names}


def _incr(key: str, amount: int) -> None:
    if type(caches[DEFAULT_CACHE_ALIAS]).incr is BaseCache.incr:  # ``cache`` is only a proxy
        # The generic incr (file and database caches) is a get and a set that resets the key's
        # timeout to the default, which would expire a counter after five quiet minutes.
        cache.set(key, (cache.get(key) or 0) + amount, timeout=None)
        return
    try:
        cache.incr(key, amount)
    except ValueError:  # not there yet; add() is atomic, so one first writer wins
        if not cache.add(key, amount, timeout=None):
            cache.incr(key, amount)


# ------------------------------------------------------------------------------
# Request latencies: per (method, route), one counter per bucket and the sum in microseconds.
# The count is the sum of the buckets, which saves a cache write per request.
# ------------------------------------------------------------------------------
def _series(method: str, route: str) -> str:
    return f"http:{method}:{route}"


def observe_request(method: str, route: str, seconds: float) -> None:
    slot = next((i for i, bound in enumerate(LATENCY_BUCKETS) if seconds <= bound), len(LATENCY_BUCKETS))
    series = _series(method, route)
    add(f"{series}:b{slot}")
    add(f"{series}:us", max(round(seconds * 1_000_000), 1))


def request_latencies(series: Iterable[tuple[str, str]]) -> list[tuple[str, str, list[int], float]]:
    """(method, route, per-bucket counts, sum in seconds) of each of these series that has had a
    request. Two cache reads however many series there are."""
    series = list(series)
    sums = counters(f"{_series(method, route)}:us" for method, route in series)
    seen = [(method, route) for method, route in series if sums[f"{_series(method, route)}:us"]]
    slots = range(len(LATENCY_BUCKETS) + 1)
    counts = counters(f"{_series(method, route)}:b{slot}" for method, route in seen for slot in slots)
    return [
        (
            method,
            route,
            [counts[f"{_series(method, route)}:b{slot}"] for slot in slots],
            sums[f"{_series(method, route)}:us"] / 1_000_000,
        )
        for method, route in seen
    ]
