"""Durations as sparse log-scale histograms, so hours of runs add up without keeping each value.

Bucket 0 holds [0, 1) ms; bucket i ≥ 1 holds [BASE**(i-1), BASE**i) ms with BASE = 2**(1/16), so
each bucket is 4.4% wide. A percentile places each rank evenly within its bucket and interpolates
between ranks as PostgreSQL's percentile_cont does, so it is within one bucket width of the exact
value: at most 4.5% off (1 ms under 1 ms). Histograms are ``{bucket: count}`` dicts with string
keys, as JSON stores them."""

import math
from collections.abc import Iterable
from datetime import datetime

BASE = 2 ** (1 / 16)
#: The documented tolerance of a percentile read from a histogram (relative, ≥ 1 ms).
TOLERANCE = BASE - 1 + 0.001
LOG_BASE = math.log(BASE)


def bucket(ms: float) -> int:
    if ms < 1:
        return 0
    return int(math.log(ms) / LOG_BASE) + 1


def bounds(index: int) -> tuple[float, float]:
    return (0.0, 1.0) if index == 0 else (BASE ** (index - 1), BASE**index)


def add(histogram: dict, ms: float, n: int = 1) -> None:
    key = str(bucket(ms))
    histogram[key] = histogram.get(key, 0) + n


def add_bucket(histogram: dict, index: int, n: int) -> None:
    """Counts ``n`` durations in bucket ``index`` (the database computed it: rollups._bucket)."""
    key = str(int(index))
    histogram[key] = histogram.get(key, 0) + n


def merge(into: dict, other: dict) -> dict:
    for key, n in other.items():
        into[key] = into.get(key, 0) + n
    return into


def of_pairs(pairs: Iterable[tuple[datetime, datetime]]) -> dict:
    """The histogram of ``finished - started`` over (started, finished) pairs."""
    histogram: dict = {}
    for started, finished in pairs:
        add(histogram, (finished - started).total_seconds() * 1000)
    return histogram


def count(histogram: dict) -> int:
    return sum(histogram.values())


def percentile(histogram: dict, fraction: float) -> float | None:
    """The ``fraction`` percentile (0..1), or None for an empty histogram."""
    total = count(histogram)
    if not total:
        return None
    position = (total - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, total - 1)
    low_value, high_value = _rank(histogram, low), _rank(histogram, high)
    return round(low_value + (high_value - low_value) * (position - low), 3)


def _rank(histogram: dict, rank: int) -> float:
    """The value of the ``rank``-th smallest duration (0-based), spread evenly in its bucket."""
    seen = 0
    for index in sorted(map(int, histogram)):
        n = histogram[str(index)]
        if rank < seen + n:
            low, high = bounds(index)
            return low + (high - low) * (rank - seen + 0.5) / n
        seen += n
    raise IndexError(rank)


def stats(histogram: dict) -> dict:
    """p50, p95 and the count, as GET /metrics shows them (nothing is sampled any more)."""
    return {
        "p50": percentile(histogram, 0.50),
        "p95": percentile(histogram, 0.95),
        "count": count(histogram),
        "sampled": False,
    }
