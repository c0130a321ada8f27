"""Throttles keyed on the client's address as sparkops.lib.client_address reads it, so DRF's own
X-Forwarded-For handling (NUM_PROXIES, which trusts any peer) never decides who a client is."""

from rest_framework.throttling import ScopedRateThrottle

from sparkops.lib.client_address import client_address


class ClientScopedRateThrottle(ScopedRateThrottle):
    def get_ident(self, request) -> str:
        return client_address(request)
