"""The address of the client behind a request. ``REMOTE_ADDR`` is the peer of the socket; behind a
reverse proxy that is the proxy. Only a peer listed in ``SPARKOPS_TRUSTED_PROXIES`` is believed
about ``X-Forwarded-For``, and only for the hops it and other trusted proxies appended: a client
can put anything at the front of the header, so it is read from the right."""

import ipaddress

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_address(request) -> str:
    """The rightmost address that is not a trusted proxy, or REMOTE_ADDR with no trusted proxy."""
    remote = request.META.get("REMOTE_ADDR", "")
    networks = trusted_proxies()
    if not networks or not _is_trusted(remote, networks):
        return remote
    address = remote
    hops = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
    for hop in reversed([hop.strip() for hop in hops if hop.strip()]):
        if _parse(hop) is None:
            break  # a garbled hop: everything left of it is the client's word, not a proxy's
        address = hop
        if not _is_trusted(hop, networks):
            break
    return address


def from_trusted_proxy(request) -> bool:
    return _is_trusted(request.META.get("REMOTE_ADDR", ""), trusted_proxies())


def trusted_proxies() -> list:
    try:
        return [ipaddress.ip_network(n, strict=False) for n in settings.SPARKOPS_TRUSTED_PROXIES]
    except ValueError as exc:
        raise ImproperlyConfigured(f"SPARKOPS_TRUSTED_PROXIES: {exc}") from exc


def _parse(value: str) -> Address | None:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    return getattr(address, "ipv4_mapped", None) or address  # ::ffff:10.0.0.1 on dual-stack


def _is_trusted(value: str, networks: list) -> bool:
    address = _parse(value)
    return address is not None and any(address in network for network in networks)
