"""Request latencies for ``GET /metrics``, labelled by method and route name.

Labels are bounded by the URLconf, never taken from the raw path: a request is labelled with the
name of the route it resolved to (``run-detail``, ``metrics-summary``), ``admin`` for anything in
the admin, and ``other`` for unnamed routes, static files and paths that match nothing.
"""

import time
from functools import lru_cache

from django.urls import URLPattern, URLResolver, get_resolver

from . import cache_metrics

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
OTHER = "other"
ADMIN = "admin"


class RequestLatencyMiddleware:
    """Outermost, so the time includes every other middleware. For a streamed response (the run
    event stream) it is the time to the first byte, not the length of the stream."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        method = request.method if request.method in METHODS else OTHER
        cache_metrics.observe_request(method, route_of(request), time.perf_counter() - started)
        return response


def route_of(request) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None or not match.url_name:
        return OTHER
    if match.namespaces[:1] == [ADMIN]:
        return ADMIN
    return match.view_name


@lru_cache(maxsize=1)
def route_names() -> tuple[str, ...]:
    """Every label ``route_of`` can give; the collector reads exactly these series."""
    names = {name for name in _names(get_resolver().url_patterns) if not name.startswith(f"{ADMIN}:")}
    return tuple(sorted(names | {ADMIN, OTHER}))


def _names(patterns, prefix: str = ""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _names(pattern.url_patterns, f"{prefix}{pattern.namespace}:" if pattern.namespace else prefix)
        elif isinstance(pattern, URLPattern) and pattern.name:
            yield f"{prefix}{pattern.name}"
