"""The guarded outbound client against real local servers: what it refuses to reach (before any
byte is sent), how it follows redirects, and the caps on size and time."""

import contextlib
import functools
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sparkops.lib import http
from sparkops.lib.http import BlockedDestination, OutboundError, ResponseTooLarge

Respond = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class Server:
    """A real HTTP server on ``host``; each request is recorded, then answered by ``respond``."""

    def __init__(self, host: str = "127.0.0.1", respond: Respond | None = None) -> None:
        self.requests: list[Seen] = []
        self.respond = respond or answer(200, b"ok")
        self.stopping = threading.Event()  # wakes handlers that sleep, so no test waits on them
        server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
        self._httpd = server_class((host, 0), _handler_for(self))
        self.host, self.port = host, self._httpd.server_address[1]
        serve = functools.partial(self._httpd.serve_forever, poll_interval=0.02)
        threading.Thread(target=serve, daemon=True).start()

    def url(self, path: str = "/") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _handler_for(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # needed for chunked bodies; every answer closes the connection

        def do_GET(self) -> None:
            server.requests.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
            # The client may give up first, as the size and time caps mean it to.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                server.respond(self)

        def log_message(self, format, *args) -> None:
            pass

    return Handler


def answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Respond:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in {"Content-Length": str(len(body)), "Connection": "close", **(headers or {})}.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    return respond


def redirect_to(location: str, status: int = 302) -> Respond:
    return answer(status, headers={"Location": location})


@pytest.fixture
def servers(settings):
    """Start servers with ``servers(host, respond)``; all are stopped after the test. The
    allow-list starts empty, as in production."""
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = []
    started: list[Server] = []

    def start(host: str = "127.0.0.1", respond: Respond | None = None) -> Server:
        started.append(Server(host, respond))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def refused(url: str, exc_type: type[OutboundError] = BlockedDestination, **kwargs) -> OutboundError:
    with pytest.raises(exc_type) as excinfo:
        http.request("GET", url, timeout=1, **kwargs)
    assert excinfo.value.permanent
    return excinfo.value


# ------------------------------------------------------------------------------
# Refused destinations (allow-list empty)
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "template",
    [
        "http://127.0.0.1:{port}/",
        "http://localhost:{port}/",
        "http://2130706433:{port}/",  # 127.0.0.1 as one decimal number
        "http://0x7f000001:{port}/",  # ... and in hex
        "http://[::ffff:127.0.0.1]:{port}/",  # IPv4-mapped IPv6
        "http://0.0.0.0:{port}/",  # "this host" reaches local listeners on Linux
    ],
)
def test_loopback_in_any_spelling_is_refused_before_anything_is_sent(servers, template):
    server = servers()
    error = refused(template.format(port=server.port))
    assert "non-public address" in str(error)
    assert server.requests == []


def test_ipv6_loopback_is_refused_before_anything_is_sent(servers):
    server = servers("::1")
    refused(server.url())
    assert server.requests == []


def test_octal_loopback_is_refused_as_an_invalid_url(servers):
    server = servers()
    error = refused(f"http://0177.0.0.1:{server.port}/", OutboundError)
    assert "Invalid URL" in str(error)
    assert server.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata
        "http://100.64.0.1/",  # carrier-grade NAT
        "http://[fd00::1]/",  # unique local IPv6
        "http://[fe80::1]/",  # link-local IPv6
        "http://224.0.0.1/",  # multicast
    ],
)
def test_private_link_local_and_multicast_addresses_are_refused(servers, url):
    error = refused(url)
    assert "non-public address" in str(error)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://127.0.0.1:70/_", "ftp://example.com/", "//x.com/a"])
def test_only_http_and_https_are_allowed(servers, url):
    assert "Only http and https" in str(refused(url))


def test_a_malformed_url_is_a_permanent_outbound_error():
    assert "Invalid URL" in str(refused("http://[::1", OutboundError))


def test_a_host_resolving_to_any_private_address_is_refused(servers, monkeypatch):
    # A resolver answering a public and a private address is how rebinding attacks pick a target.
    server = servers()
    answers = [("93.184.216.34", server.port), ("127.0.0.1", server.port)]
    infos = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", address) for address in answers]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: infos)

    error = refused(f"http://rebind.example:{server.port}/")

    assert "(127.0.0.1)" in str(error)
    assert server.requests == []


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_not_blocked(address, settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = []
    assert not http.is_blocked(address)


def test_the_allow_list_opens_exactly_the_networks_it_names(settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32", "10.1.0.0/16"]
    assert not http.is_blocked("127.0.0.1")
    assert not http.is_blocked("::ffff:127.0.0.1")
    assert not http.is_blocked("10.1.2.3")
    assert http.is_blocked("127.0.0.2")
    assert http.is_blocked("10.2.0.1")


def test_an_allowed_local_server_is_reached(servers, settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    server = servers(respond=answer(200, b'{"ok": true}', {"Content-Type": "application/json"}))

    response = http.request("GET", server.url("/items"), params={"q": "a b"}, headers={"X-Trace": "1"})

    assert (response.status_code, response.json(), response.history) == (200, {"ok": True}, [])
    assert response.url == server.url("/items?q=a+b")
    assert response.elapsed_ms > 0
    assert (server.requests[0].path, server.requests[0].headers["x-trace"]) == ("/items?q=a+b", "1")


# ------------------------------------------------------------------------------
# Redirects
# ------------------------------------------------------------------------------
def test_a_redirect_to_a_refused_address_is_not_followed(servers, settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    target = servers("127.0.0.2")
    start = servers("127.0.0.1", redirect_to(target.url("/secret")))

    error = refused(start.url("/"))

    assert "127.0.0.2" in str(error)
    assert len(start.requests) == 1
    assert target.requests == []


@pytest.mark.parametrize("location", ["http://169.254.169.254/latest/meta-data", "file:///etc/passwd"])
def test_a_redirect_to_metadata_or_a_file_is_refused(servers, settings, location):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    start = servers(respond=redirect_to(location, 307))
    refused(start.url())


def hops(server_box: list) -> Respond:
    """Redirect /n to /n+1 forever."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        n = int(handler.path.strip("/") or 0)
        redirect_to(server_box[0].url(f"/{n + 1}"))(handler)

    return respond


def test_more_redirects_than_allowed_is_a_permanent_error(servers, settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    box: list = []
    box.append(servers(respond=hops(box)))

    error = refused(box[0].url("/0"), OutboundError, max_redirects=2)

    assert "More than 2 redirects" in str(error)
    assert [r.path for r in box[0].requests] == ["/0", "/1", "/2"]


def test_redirects_up_to_the_limit_are_followed(servers, settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    box: list = []

    def respond(handler):
        (hops(box) if handler.path != "/3" else answer(200, b"arrived"))(handler)

    box.append(servers(respond=respond))

    response = http.request("GET", box[0].url("/0"), max_redirects=3)

    assert (response.status_code, response.content) == (200, b"arrived")
    assert response.history == [box[0].url(f"/{n}") for n in range(3)]


def test_max_redirects_zero_returns_the_redirect_itself(servers, settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    server = servers(respond=redirect_to("http://127.0.0.1:9/elsewhere", 301))

    response = http.request("GET", server.url(), max_redirects=0)

    assert (response.status_code, response.headers["location"]) == (301, "http://127.0.0.1:9/elsewhere")
    assert len(server.requests) == 1


CALLER_HEADERS = {"X-API-Key": "sk-caller", "Authorization": "Bearer sk-caller", "X-Trace": "t-1"}


def test_a_cross_origin_redirect_drops_the_callers_headers(servers, settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32", "127.0.0.2/32"]
    other = servers("127.0.0.2")
    start = servers("127.0.0.1", redirect_to(other.url("/landing"), 307))

    response = http.request("GET", start.url("/"), headers=CALLER_HEADERS)

    assert response.status_code == 200
    assert start.requests[0].headers["x-api-key"] == "sk-caller"
    landed = other.requests[0].headers
    assert {"x-api-key", "authorization", "x-trace"}.isdisjoint(landed)


def test_a_same_origin_redirect_keeps_the_callers_headers(servers, settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    box: list = []

    def respond(handler):
        (redirect_to(box[0].url("/moved")) if handler.path == "/" else answer(200, b"here"))(handler)

    box.append(servers(respond=respond))

    http.request("GET", box[0].url("/"), headers=CALLER_HEADERS)

    moved = box[0].requests[1]
    assert moved.path == "/moved"
    assert (moved.headers["x-api-key"], moved.headers["authorization"]) == ("sk-caller", "Bearer sk-caller")


# ------------------------------------------------------------------------------
# Size and time caps
# ------------------------------------------------------------------------------
def test_a_declared_length_over_the_cap_is_refused(servers, settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    server = servers(respond=answer(200, b"x" * 2048))
    with pytest.raises(ResponseTooLarge) as excinfo:
        http.request("GET", server.url(), max_bytes=1024)
    assert excinfo.value.permanent
    assert "2048 bytes" in str(excinfo.value)


def chunked(total: int, chunk: int = 256) -> Respond:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()
        for _ in range(total // chunk):
            handler.wfile.write(b"%x\r\n%s\r\n" % (chunk, b"y" * chunk))
        handler.wfile.write(b"0\r\n\r\n")

    return respond


def test_a_chunked_body_over_the_cap_is_refused(servers, settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    server = servers(respond=chunked(4096))
    with pytest.raises(ResponseTooLarge) as excinfo:
        http.request("GET", server.url(), max_bytes=1024)
    assert "limit of 1024 bytes" in str(excinfo.value)


def test_a_body_at_the_cap_is_read_whole(servers, settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    server = servers(respond=chunked(1024))
    assert http.request("GET", server.url(), max_bytes=1024).content == b"y" * 1024


def test_a_slow_answer_times_out_as_a_transient_error(servers, settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    box: list = []

    def slow(handler):
        box[0].stopping.wait(5)

    box.append(servers(respond=slow))
    started = time.monotonic()

    with pytest.raises(OutboundError) as excinfo:
        http.request("GET", box[0].url(), timeout=0.2)

    assert type(excinfo.value) is http.TimedOut
    assert not excinfo.value.permanent
    assert "Timed out" in str(excinfo.value)
    assert time.monotonic() - started < 2


def test_a_body_dripping_in_slowly_is_cut_off_at_the_timeout(servers, settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    box: list = []

    def drip(handler):
        answer(200, b"", {"Content-Length": "100"})(handler)
        for _ in range(100):  # each byte well within the read timeout; all of them far past it
            handler.wfile.write(b"z")
            handler.wfile.flush()
            if box[0].stopping.wait(0.05):
                return

    box.append(servers(respond=drip))
    started = time.monotonic()

    with pytest.raises(OutboundError) as excinfo:
        http.request("GET", box[0].url(), timeout=0.3)

    assert not excinfo.value.permanent
    assert "Timed out" in str(excinfo.value)
    assert time.monotonic() - started < 1.5


def test_headers_dripping_in_slowly_are_cut_off_at_the_timeout(servers, settings):
    # Each read returns well within httpx's per-read timeout; only a deadline over the whole call
    # stops a server that never finishes its headers.
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    box: list = []

    def drip(handler):
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        for n in range(100):
            handler.wfile.write(f"X-Drip-{n}: z\r\n".encode())
            handler.wfile.flush()
            if box[0].stopping.wait(0.05):
                return

    box.append(servers(respond=drip))
    started = time.monotonic()

    with pytest.raises(http.TimedOut):
        http.request("GET", box[0].url(), timeout=0.3)

    assert time.monotonic() - started < 1


def test_connection_refused_is_a_transient_error(settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(OutboundError) as excinfo:
        http.request("GET", f"http://127.0.0.1:{port}/", timeout=1)

    assert not excinfo.value.permanent
