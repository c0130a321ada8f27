"""OpenTelemetry traces, exported over OTLP/HTTP: requests (Django), Celery tasks, database calls
(psycopg, sqlite3) and one trace per run (runs/engine/spans.py, through the API).

Off unless an exporter is named (settings, "Traces, logs and process health"): the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``, with ``OTEL_EXPORTER_OTLP_HEADERS``
and the other standard variables, which the exporter reads itself), and/or ``LANGWATCH_API_KEY``,
a shortcut to LangWatch's OTLP endpoint with its bearer header. Both may be set: each gets the
spans. Off, nothing here runs: no SDK, no instrumentation, and the engine's spans are the API's
no-ops.

``configure()`` runs once per process at Django start-up (telemetry's AppConfig.ready), before
the web server loads its middleware. Celery's prefork children inherit the set-up; each builds
its own exporter and export thread when it starts (worker_process_init; any other process on its
first span: ``_PerProcess``), so nothing opened by the parent is shared with a child, and flushes
it when the child stops (worker_process_shutdown).
"""

import logging
import os
import sys
import threading
import time

from django.conf import settings
from django.db import transaction
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

log = logging.getLogger(__name__)

# Probes and scrapes are not worth a trace each.
DEFAULT_EXCLUDED_URLS = "/health$,/health/ready$,/metrics$,/static/"

_state: dict = {}


def enabled() -> bool:
    return bool(settings.SPARKOPS_TRACING_EXPORTERS)


def configure() -> bool:
    """Set up the SDK, exporters and instrumentation once in this process; False when off."""
    if not enabled() or _state:
        return bool(_state)
    provider = TracerProvider(resource=_resource())
    processors = [_PerProcess(exporter) for exporter in settings.SPARKOPS_TRACING_EXPORTERS]
    for processor in processors:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _state.update(provider=provider, processors=processors)
    _instrument()
    _connect_run_receivers()
    return True


def _resource() -> Resource:
    """``service.name`` from OTEL_SERVICE_NAME (default sparkops) and which process this is."""
    command = " ".join(sys.argv[1:4])
    role = "worker" if " worker" in f" {command}" else "beat" if " beat" in f" {command}" else "web"
    return Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME") or "sparkops",
            "service.version": _version(),
            "sparkops.process": role,
        }
    )


def _version() -> str:
    from sparkops import __version__

    return __version__


def _instrument() -> None:
    """The official instrumentations, less those OTEL_PYTHON_DISABLED_INSTRUMENTATIONS names
    (e.g. ``psycopg,sqlite3``: no span per SQL statement, the bulk of a trace's volume)."""
    disabled = {name.strip() for name in os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")}
    for name, instrument in INSTRUMENTATIONS.items():
        if name not in disabled:
            instrument()


def _django() -> None:
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    excluded = os.environ.get("OTEL_PYTHON_DJANGO_EXCLUDED_URLS", DEFAULT_EXCLUDED_URLS)
    DjangoInstrumentor().instrument(excluded_urls=excluded)


def _celery() -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    CeleryInstrumentor().instrument()


def _psycopg() -> None:
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    # No SQL commenter: statements stay byte-identical, so PostgreSQL's plan cache and
    # pg_stat_statements see one query, not one per trace.
    PsycopgInstrumentor().instrument(enable_commenter=False, skip_dep_check=True)


def _sqlite3() -> None:
    from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor

    SQLite3Instrumentor().instrument()


INSTRUMENTATIONS = {"django": _django, "celery": _celery, "psycopg": _psycopg, "sqlite3": _sqlite3}


def process_started(**kwargs) -> None:
    """Celery's worker_process_init, in a prefork child: set up (a no-op when inherited from the
    parent, which is the usual case) and make this process's exporters now, not on the first task."""
    if configure():
        for processor in _state["processors"]:
            processor.current()


def process_stopping(**kwargs) -> None:
    flush()


def flush(timeout_millis: int = 5000) -> None:
    """Send what this process has buffered (a stopping worker child, a test)."""
    for processor in _state.get("processors", ()):
        processor.force_flush(timeout_millis)


class _PerProcess(SpanProcessor):
    """A batch processor and OTLP exporter of this process's own, made on its first span: a
    prefork child never writes through a connection or thread its parent made."""

    def __init__(self, exporter: dict) -> None:
        self.exporter = exporter
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._inner: BatchSpanProcessor | None = None

    def current(self) -> BatchSpanProcessor:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                    self._inner = BatchSpanProcessor(OTLPSpanExporter(**self.exporter))
                    self._pid = os.getpid()
        return self._inner

    def on_end(self, span: ReadableSpan) -> None:
        self.current().on_end(span)

    def shutdown(self) -> None:
        if self._inner is not None and self._pid == os.getpid():
            self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if self._inner is not None and self._pid == os.getpid():
            return self._inner.force_flush(timeout_millis)
        return True


# ------------------------------------------------------------------------------
# The run's own span, and the step outcomes on the steps' spans
# ------------------------------------------------------------------------------
RUN_ENDED = {"run.succeeded": StatusCode.OK, "run.failed": StatusCode.ERROR, "run.cancelled": StatusCode.UNSET}


def _connect_run_receivers() -> None:
    from runs.signals import events_written

    events_written.connect(_on_events, dispatch_uid="telemetry.tracing.events")


def _on_events(sender, run_id, events, **kwargs) -> None:
    """Each event the engine writes becomes an event of the span it is written under (a step's
    outcome on the step's span); a run that ended gets its own span once that commits."""
    span = trace.get_current_span()
    recording = span.is_recording()
    # A step's span carries its step's status; the advance its success makes in the same
    # transaction writes other steps' events (step.queued) under it too.
    own_step = (getattr(span, "attributes", None) or {}).get("sparkops.step.id") if recording else None
    for event in events:
        if recording:
            span.add_event(event.type, {"sparkops.event.sequence": event.sequence})
            if event.type.startswith("step.") and event.step_id is not None and event.step_id == own_step:
                span.set_attribute("sparkops.step.status", event.type.removeprefix("step."))
        if event.type in RUN_ENDED:
            transaction.on_commit(lambda: _export_run_span_quietly(run_id))


def _export_run_span_quietly(run_id) -> None:
    """After the engine's commit: a failure here is logged, never raised into the engine."""
    try:
        export_run_span(run_id)
    except Exception:  # tracing must never fail a run
        log.warning("could not export the span of run %s", run_id, exc_info=True)


def export_run_span(run_id) -> None:
    """The run's span, root of its trace, with the ids runs/engine/spans.py gave its steps: from
    queued to finished, with the run's totals. Written once the run ended, as a finished span."""
    from runs.engine.spans import run_span_context
    from runs.models import Run

    run = Run.objects.select_related("workflow").filter(pk=run_id).first()
    if run is None or run.finished_at is None:
        return
    context = run_span_context(run.pk)
    span = ReadableSpan(
        name=f"run {run.workflow.slug}",
        context=trace.SpanContext(context.trace_id, context.span_id, is_remote=False, trace_flags=context.trace_flags),
        parent=None,
        resource=_state["provider"].resource,
        attributes=_run_attributes(run),
        kind=SpanKind.INTERNAL,
        instrumentation_scope=InstrumentationScope("sparkops.runs"),
        status=Status(RUN_ENDED.get(f"run.{run.status}", StatusCode.UNSET)),
        start_time=_nanos(run.queued_at),
        end_time=_nanos(run.finished_at),
    )
    for processor in _state["processors"]:
        processor.on_end(span)


def _run_attributes(run) -> Attributes:
    return {
        "sparkops.run.id": str(run.pk),
        "sparkops.project.id": str(run.project_id),
        "sparkops.workflow.id": str(run.workflow_id),
        "sparkops.workflow.slug": run.workflow.slug,
        "sparkops.run.status": run.status,
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.usage.input_tokens": run.input_tokens,
        "gen_ai.usage.output_tokens": run.output_tokens,
        "sparkops.cost_usd": float(run.cost_usd or 0),
    }


def _nanos(moment) -> int:
    return int(moment.timestamp() * 1e9) if moment else time.time_ns()
