from django.urls import NoReverseMatch, reverse

from .choices import Channel
from .context import acting, request_id_of


def _admin_prefix() -> str:
    try:
        return reverse("admin:index")
    except NoReverseMatch:
        return "/admin/"


class AuditContextMiddleware:
    """Opens the audit context of a request: the API's and the admin's changes carry its user (or
    API key), address and request id. After AuthenticationMiddleware (the admin's session user)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        channel = Channel.ADMIN if request.path.startswith(_admin_prefix()) else Channel.API
        with acting(channel, request=request, request_id=request_id_of(request)):
            return self.get_response(request)
