"""A real OTLP/HTTP trace receiver on 127.0.0.1: it decodes each ExportTraceServiceRequest it is
sent (protobuf, opentelemetry-proto's classes) into plain span dicts, and keeps the headers."""

import gzip
import time
from http.server import BaseHTTPRequestHandler

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from runs.tests.e2e_support import LocalServer, reply


class OtlpReceiver(LocalServer):
    def __init__(self) -> None:
        self.spans: list[dict] = []
        self.requests: list[dict] = []  # path and headers of every export
        self.serve(_handler(self))

    def wait_for(self, predicate, timeout: float = 30) -> list[dict]:
        """The spans received, once ``predicate(spans)`` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                spans = list(self.spans)
            if predicate(spans):
                return spans
            time.sleep(0.1)
        raise AssertionError(f"never held; received {[(s['name'], s['attributes']) for s in self.spans]}")


def _value(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def _attributes(pairs) -> dict:
    return {pair.key: _value(pair.value) for pair in pairs}


def decode(body: bytes) -> list[dict]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    {
                        "name": span.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "kind": span.kind,
                        "status": span.status.code,
                        "attributes": _attributes(span.attributes),
                        "events": [event.name for event in span.events],
                        "links": [link.span_id.hex() for link in span.links],
                        "scope": scope_spans.scope.name,
                        "resource": resource,
                    }
                )
    return spans


def _handler(receiver: OtlpReceiver):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            spans = decode(body)
            with receiver.lock:
                receiver.requests.append(
                    {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}
                )
                receiver.spans.extend(spans)
            reply(self, 200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

        def log_message(self, *args) -> None:
            pass

    return Handler
