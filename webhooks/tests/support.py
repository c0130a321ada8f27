"""A webhook receiver on 127.0.0.1 for the tests: it records every request and answers with the
statuses it is told, one per request (the last one again once they run out)."""

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from standardwebhooks.webhooks import Webhook

from runs.tests.e2e_support import LocalServer
from webhooks import services
from webhooks.models import Endpoint


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def verify(self, secret: str) -> dict:
        """What any Standard Webhooks receiver does: raises WebhookVerificationError if unsigned."""
        return Webhook(secret).verify(self.body, self.headers)


class Receiver(LocalServer):
    def __init__(self, statuses: tuple[int, ...] = (200,), delays: tuple[float, ...] = ()) -> None:
        self.statuses, self.delays = list(statuses), list(delays)  # delays: per request, in order
        self.received: list[Received] = []
        self.on_request = None  # called (in the server's thread) as each request arrives
        self.arrived = threading.Event()
        self.serve(_handler(self))

    @property
    def url(self) -> str:
        return f"{self.origin}/hook"

    def next_status(self) -> int:
        with self.lock:
            return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]


def _handler(receiver: Receiver):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            with receiver.lock:
                receiver.received.append(Received(self.path, dict(self.headers), body))
                delay = receiver.delays.pop(0) if receiver.delays else 0.0
            receiver.arrived.set()
            if receiver.on_request is not None:
                receiver.on_request()
            time.sleep(delay)
            status = receiver.next_status()
            payload = b'{"ok": true}' if status < 300 else b"nope"
            self.send_response(status)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args) -> None:
            pass

    return Handler


def make_endpoint(project, url: str, **fields) -> tuple[Endpoint, str]:
    return services.endpoint_create(endpoint=Endpoint(project=project, url=url, **fields))
