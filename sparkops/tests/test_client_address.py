"""Which address a request comes from, with and without trusted proxies."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory

from sparkops.lib.client_address import client_address


def address(remote: str, forwarded_for: str | None = None) -> str:
    extra = {"HTTP_X_FORWARDED_FOR": forwarded_for} if forwarded_for is not None else {}
    return client_address(RequestFactory().get("/", REMOTE_ADDR=remote, **extra))


def test_with_no_trusted_proxy_the_header_is_never_read(settings):
    settings.SPARKOPS_TRUSTED_PROXIES = []
    assert address("192.0.2.1", "203.0.113.9") == "192.0.2.1"


@pytest.mark.parametrize(
    ("remote", "forwarded_for", "expected"),
    [
        ("10.9.0.2", "203.0.113.9", "203.0.113.9"),
        ("10.9.0.2", "198.51.100.1, 203.0.113.9", "203.0.113.9"),  # the client wrote the first hop
        ("10.9.0.2", "203.0.113.9, 10.9.0.7", "203.0.113.9"),  # two proxies in a row
        ("10.9.0.2", "203.0.113.9, not-an-ip", "10.9.0.2"),  # a garbled hop stops the walk
        ("10.9.0.2", "", "10.9.0.2"),
        ("10.9.0.2", "10.9.0.5", "10.9.0.5"),  # every hop trusted: the leftmost
        ("192.0.2.1", "203.0.113.9", "192.0.2.1"),  # an untrusted peer
        ("::ffff:10.9.0.2", "2001:db8::1", "2001:db8::1"),
    ],
)
def test_behind_trusted_proxies_it_takes_the_rightmost_untrusted_hop(settings, remote, forwarded_for, expected):
    settings.SPARKOPS_TRUSTED_PROXIES = ["10.9.0.0/16"]
    assert address(remote, forwarded_for) == expected


def test_a_malformed_setting_is_a_configuration_error(settings):
    settings.SPARKOPS_TRUSTED_PROXIES = ["10.9.0.0/33"]
    with pytest.raises(ImproperlyConfigured, match="SPARKOPS_TRUSTED_PROXIES"):
        address("10.9.0.2", "203.0.113.9")
