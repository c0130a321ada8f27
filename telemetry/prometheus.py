"""``GET /metrics``: Prometheus text format, read from the database and the cache at scrape time.

Run and step counts, the ledger and the queue come from the database, and the reaper's and the
requests' counters from the cache, so any web process answers for all of them (gunicorn workers
and Celery processes included) without prometheus_client's multiprocess mode. Labels stay
bounded: statuses, methods and route names, never projects or paths.
"""

import hmac
import ipaddress
import logging

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Count, Q, Sum
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_safe
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from policies.choices import EntryStatus
from policies.models import SpendEntry
from runs.choices import RunStatus, StepStatus
from runs.models import Run, RunStep
from sparkops.api.exceptions import error_body
from sparkops.lib.client_address import client_address, from_trusted_proxy

from . import cache_metrics
from .middleware import METHODS, OTHER, route_names

log = logging.getLogger(__name__)

#: Keys of the counts runs.signals.reaped carries, each a counter of what the reaper did
#: (buffered_fires_started: sent by schedules.tasks.release_buffered).
REAPER_ACTIONS = ("steps", "runs", "reservations", "buffered_fires_started")
# A proxy adds one of these: the address Django sees is then the proxy's, not the scraper's.
FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")
NOT_ALLOWED = (
    "Metrics need the bearer token in SPARKOPS_METRICS_TOKEN or a client address in SPARKOPS_METRICS_ALLOWED_NETWORKS."
)


def reaper_counted(sender, counts: dict[str, int], **kwargs) -> None:
    """Add what one reaper pass did to the reaper counters (receives ``runs.signals.reaped``)."""
    for action in REAPER_ACTIONS:
        cache_metrics.add(f"reaper:{action}", counts.get(action, 0))


# ------------------------------------------------------------------------------
# The collector
# ------------------------------------------------------------------------------
class SparkOpsCollector:
    """Everything ``/metrics`` shows, computed at each scrape: three grouped queries (runs,
    steps, ledger), three cache reads and, on a Redis broker, one pipelined LLEN. The grouped
    counts read every run and step row; at tens of millions of rows, scrape less often."""

    def collect(self):
        runs = _by_status(Run, RunStatus.values)
        steps = _by_status(RunStep, StepStatus.values)
        yield _gauge("sparkops_runs", "Runs by current status.", "status", runs)
        yield _gauge("sparkops_steps", "Run steps by current status.", "status", steps)
        yield from _spend()
        queued = {"runs": runs[RunStatus.QUEUED], "steps": steps[StepStatus.QUEUED]}
        yield _gauge("sparkops_queue_depth", "Runs and steps waiting in queued.", "queue", queued)
        if (broker := _broker_queue_lengths()) is not None:
            yield _gauge(
                "sparkops_broker_queue_length", "Messages waiting in the Redis broker's queues.", "queue", broker
            )
        yield from _cache_metrics()


def _by_status(model, statuses: list[str]) -> dict[str, int]:
    rows = dict(model.objects.order_by().values_list("status").annotate(n=Count("pk")))
    return {status: rows.get(status, 0) for status in statuses}


def _gauge(name: str, documentation: str, label: str, values: dict) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for value_label, value in values.items():
        family.add_metric([value_label], value)
    return family


def _counter(name: str, documentation: str, label: str, values: dict) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value_label, value in values.items():
        family.add_metric([value_label], value)
    return family


def _spend():
    sums = SpendEntry.objects.aggregate(
        settled=Sum("cost_usd", filter=Q(status=EntryStatus.SETTLED)),
        reserved=Sum("reserved_usd", filter=Q(status=EntryStatus.RESERVED)),
        expired=Sum("reserved_usd", filter=Q(status=EntryStatus.EXPIRED)),
        input=Sum("input_tokens"),
        output=Sum("output_tokens"),
        calls=Count("pk"),
        unpriced=Count("pk", filter=Q(status=EntryStatus.SETTLED, cost_usd__isnull=True)),
    )
    yield CounterMetricFamily(
        "sparkops_spend_usd", "Actual cost of settled provider calls, in USD.", value=float(sums["settled"] or 0)
    )
    held = {status: float(sums[status] or 0) for status in ("reserved", "expired")}
    yield _gauge(
        "sparkops_spend_held_usd",
        "Estimates counted against budgets: calls in flight (reserved), calls whose worker was lost (expired).",
        "status",
        held,
    )
    tokens = {"input": sums["input"] or 0, "output": sums["output"] or 0}
    yield _counter("sparkops_tokens", "Tokens of provider calls in the spend ledger.", "direction", tokens)
    yield CounterMetricFamily("sparkops_provider_calls", "Provider calls in the spend ledger.", value=sums["calls"])
    yield CounterMetricFamily(
        "sparkops_unpriced_calls", "Provider calls to models with no known price.", value=sums["unpriced"]
    )


def _broker_queue_lengths() -> dict[str, int] | None:
    """Messages no worker has taken yet, per queue, when the broker is Redis; None otherwise (the
    filesystem broker of the embedded default has no cheap count)."""
    url = settings.CELERY_BROKER_URL or ""
    if not url.startswith(("redis://", "rediss://")):
        return None
    import redis
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    from sparkops.celery import app

    queue = app.conf.task_default_queue
    # kombu keeps a list per priority step: "celery" for 0, "celery\x06\x163" for 3, ...
    keys = [f"{queue}{Channel.sep}{step}" if step else queue for step in PRIORITY_STEPS]
    try:
        with redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) as client:
            pipe = client.pipeline()
            for key in keys:
                pipe.llen(key)
            return {queue: sum(pipe.execute())}
    except Exception:  # the rest of the scrape is still worth answering
        log.warning("could not read the broker's queue length", exc_info=True)
        return None


def _cache_metrics():
    try:
        reaper = cache_metrics.counters(f"reaper:{action}" for action in REAPER_ACTIONS)
        latencies = cache_metrics.request_latencies(
            (method, route) for method in (*METHODS, OTHER) for route in route_names()
        )
    except Exception:  # as above: best effort
        log.warning("could not read metrics from the cache", exc_info=True)
        return
    reaper = {action: reaper[f"reaper:{action}"] for action in REAPER_ACTIONS}
    yield _counter(
        "sparkops_reaper_actions",
        "What the reaper did: steps and runs re-dispatched, reservations expired, buffered fires started.",
        "action",
        reaper,
    )
    histogram = HistogramMetricFamily(
        "sparkops_http_request_duration_seconds",
        "Time to answer an HTTP request (to the first byte for streams), by method and route name.",
        labels=["method", "route"],
    )
    bounds = [*(str(bound) for bound in cache_metrics.LATENCY_BUCKETS), "+Inf"]
    for method, route, counts, total in latencies:
        cumulative = [sum(counts[: i + 1]) for i in range(len(counts))]
        histogram.add_metric([method, route], list(zip(bounds, cumulative, strict=True)), total)
    yield histogram


# ------------------------------------------------------------------------------
# The view
# ------------------------------------------------------------------------------
@require_safe
def metrics_view(request):
    """403 unless the caller shows the token or scrapes from an allowed network."""
    if not scrape_allowed(request):
        return JsonResponse(error_body(403, "permission_denied", NOT_ALLOWED), status=403)
    return HttpResponse(generate_latest(SparkOpsCollector()), content_type=CONTENT_TYPE_LATEST)


def scrape_allowed(request) -> bool:
    token = settings.SPARKOPS_METRICS_TOKEN
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if token and header.startswith("Bearer "):
        return hmac.compare_digest(header.removeprefix("Bearer ").encode(), token.encode())
    return _from_allowed_network(request)


def _from_allowed_network(request) -> bool:
    if from_trusted_proxy(request):
        # A proxy in SPARKOPS_TRUSTED_PROXIES says who asked; one that does not vouches for no one.
        if not request.META.get("HTTP_X_FORWARDED_FOR"):
            return False
        raw = client_address(request)
    elif any(request.META.get(header) for header in FORWARDING_HEADERS):
        # Behind a reverse proxy on the same machine every visitor would look local: a request
        # through a proxy we were not told to trust must show the token.
        return False
    else:
        raw = request.META.get("REMOTE_ADDR", "")
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return False
    address = getattr(address, "ipv4_mapped", None) or address  # ::ffff:127.0.0.1 on dual-stack
    return any(address in network for network in _allowed_networks())


def _allowed_networks() -> list:
    try:
        return [ipaddress.ip_network(n, strict=False) for n in settings.SPARKOPS_METRICS_ALLOWED_NETWORKS]
    except ValueError as exc:
        raise ImproperlyConfigured(f"SPARKOPS_METRICS_ALLOWED_NETWORKS: {exc}") from exc
