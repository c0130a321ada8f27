"""The one outbound HTTP client for user-given URLs (HTTP tools, LLM base URLs, webhooks).

Nothing else in Spark-Ops opens sockets to addresses a user chose. The guard sits where the TCP
connection is made: the host is resolved once, every address it resolves to is checked, and the
socket connects to the checked address, so DNS rebinding between check and connect cannot slip
through. Redirects go through the same transport and are checked again, hop by hop. Loopback,
private, link-local (cloud metadata at 169.254.169.254), multicast and reserved ranges are
refused unless listed in ``SPARKOPS_HTTP_ALLOWED_NETWORKS`` (local development only).
"""

import functools
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field

import httpcore
import httpx
from django.conf import settings

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_MAX_REDIRECTS = 3


class OutboundError(Exception):
    """An outbound call failed. ``permanent`` says whether trying again could help."""

    permanent = False

    def __init__(self, message: str, *, permanent: bool | None = None):
        super().__init__(message)
        if permanent is not None:
            self.permanent = permanent


class BlockedDestination(OutboundError):
    permanent = True


class ResponseTooLarge(OutboundError):
    permanent = True


class TimedOut(OutboundError):
    """The call took longer than the time it was given."""


@dataclass
class Response:
    status_code: int
    headers: httpx.Headers
    content: bytes
    url: str
    elapsed_ms: float
    history: list[str] = field(default_factory=list)

    def json(self):
        import json

        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


def _allowed_networks() -> list:
    return [ipaddress.ip_network(n, strict=False) for n in settings.SPARKOPS_HTTP_ALLOWED_NETWORKS]


def is_blocked(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:  # ::ffff:127.0.0.1
        ip = ip.ipv4_mapped
    if any(ip in net for net in _allowed_networks()):
        return False
    return not ip.is_global or ip.is_multicast


def resolve_checked(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, if none is blocked. Raises BlockedDestination."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OutboundError(f"Cannot resolve {host}: {exc}") from exc
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    blocked = [a for a in addresses if is_blocked(a)]
    if blocked:
        # One bad address refuses the host: a resolver answering both a public and a private
        # address is exactly how rebinding attacks pick their target.
        raise BlockedDestination(f"Refusing to connect to {host}: it resolves to a non-public address ({blocked[0]}).")
    return addresses


def _left(deadline: float, timeout: float | None, error: type[Exception]) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("The call's total time ran out.")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """httpx's timeouts are per socket operation: a server sending its headers or body a byte at
    a time keeps each read short and the call alive for as long as it likes. Every read and write
    here waits at most until the call's deadline, so no call outlives the time it was given (a
    step's remaining time, which its lease exceeds)."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self._stream, self._deadline = stream, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(self._deadline, timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(self._deadline, timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> httpcore.NetworkStream:
        left = _left(self._deadline, timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, left), self._deadline)

    def get_extra_info(self, info: str):
        return self._stream.get_extra_info(info)


class _GuardedBackend(httpcore.SyncBackend):
    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        last_error: Exception | None = None
        for address in resolve_checked(host, port):
            try:
                left = _left(self.deadline, timeout, httpcore.ConnectTimeout)
                stream = super().connect_tcp(address, port, left, local_address, socket_options)
                return _DeadlineStream(stream, self.deadline)
            except httpcore.ConnectError as exc:
                last_error = exc
        raise last_error or httpcore.ConnectError(f"Cannot connect to {host}")


class GuardedTransport(httpx.HTTPTransport):
    def __init__(self, *, deadline: float, **kwargs):
        super().__init__(**kwargs)
        # httpx does not expose httpcore's network backend; this is where the connect happens.
        self._pool._network_backend = _GuardedBackend(deadline)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying context per process, as httpx would build it: loading the CA bundle takes
    ~150 ms of CPU, which a context per request paid on every call (a webhook, a tool call)."""
    return httpx.create_ssl_context()


def _client(timeout: float, deadline: float) -> httpx.Client:
    # trust_env=False: proxies from the environment would connect on our behalf, unguarded.
    # Redirects are followed by hand below, so each hop's headers can be vetted.
    transport = GuardedTransport(deadline=deadline, verify=_ssl_context())
    return httpx.Client(transport=transport, timeout=timeout, follow_redirects=False, trust_env=False)


def _parse(url: str) -> httpx.URL:
    try:
        return httpx.URL(url)
    except httpx.InvalidURL as exc:  # e.g. "http://0177.0.0.1" or "http://[::1"
        raise OutboundError(f"Invalid URL {url!r}: {exc}", permanent=True) from exc


def _check_scheme(url: httpx.URL) -> None:
    if url.scheme not in ("http", "https"):
        raise BlockedDestination(f"Only http and https URLs are allowed, not {str(url)!r}.")


def _origin(url: httpx.URL) -> tuple:
    return url.scheme, url.host, url.port


def request(
    method: str,
    url: str,
    *,
    headers: dict | None = None,
    json=None,
    content: bytes | None = None,
    params: dict | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
) -> Response:
    """Send one request through the guard. Raises OutboundError (and subclasses) only.

    ``timeout`` bounds the whole call, redirects and body included (TimedOut past it). With
    ``max_redirects=0`` a 3xx comes back as the response itself."""
    started = time.monotonic()
    _check_scheme(_parse(url))
    try:
        with _client(timeout, started + timeout) as client:
            outgoing = client.build_request(method, url, headers=headers, json=json, content=content, params=params)
            response, history = _send_following(client, outgoing, set(headers or {}), max_redirects)
            try:
                body = _read_capped(response, max_bytes, deadline=started + timeout)
            finally:
                response.close()
    except httpx.TimeoutException as exc:
        raise TimedOut(f"Timed out after {timeout:g}s ({type(exc).__name__}).") from exc
    except httpx.InvalidURL as exc:  # not an HTTPError; e.g. params that make a bad URL
        raise OutboundError(f"Invalid URL: {exc}", permanent=True) from exc
    except httpx.HTTPError as exc:
        raise OutboundError(f"{type(exc).__name__}: {exc}") from exc
    elapsed = (time.monotonic() - started) * 1000
    return Response(response.status_code, response.headers, body, str(response.url), elapsed, history)


def _send_following(
    client: httpx.Client, outgoing: httpx.Request, own_headers: set[str], max_redirects: int
) -> tuple[httpx.Response, list[str]]:
    first_origin, history = _origin(outgoing.url), []
    while True:
        response = client.send(outgoing, stream=True)
        following = response.next_request if response.is_redirect and max_redirects else None
        if following is None:
            return response, history
        response.close()
        if len(history) == max_redirects:
            raise OutboundError(f"More than {max_redirects} redirects.", permanent=True)
        _check_scheme(following.url)
        if _origin(following.url) != first_origin:
            # httpx drops Authorization across origins, but not X-API-Key and the like: a
            # redirect must never carry a tool's or provider's credentials to another host.
            for name in own_headers:
                following.headers.pop(name, None)
        history.append(str(outgoing.url))
        outgoing = following


def _read_capped(response: httpx.Response, max_bytes: int, *, deadline: float) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ResponseTooLarge(f"Response is {declared} bytes; the limit is {max_bytes}.")
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise ResponseTooLarge(f"Response exceeds the limit of {max_bytes} bytes.")
        # httpx's timeout is per read: a server dripping a byte at a time would hold the worker
        # for as long as it likes. The whole call gets the timeout.
        if time.monotonic() > deadline:
            raise TimedOut("Timed out: the response body was still arriving at the deadline.")
        chunks.append(chunk)
    return b"".join(chunks)
