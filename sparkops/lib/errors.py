"""Refusals that services raise and the API answers as they say, without the service knowing
about HTTP frameworks: a status, a code, a message, field-level errors and extra headers.

The one exception handler (sparkops.api.exceptions) maps every ``Refused`` to the API's error
shape, so a view never catches one to translate it. A refusal names its status and code on its
class; the kinds below are the statuses services use, to subclass with a domain name.
"""


class Refused(Exception):
    status_code = 400
    code = "refused"
    #: The message when the raiser gives none.
    default_message = "This request was refused."

    def __init__(self, message: str | None = None, *, errors: dict | None = None, headers: dict | None = None, **extra):
        message = message or self.default_message
        super().__init__(message)
        self.message = message
        self.errors = errors or {}
        self.headers = headers or {}
        self.extra = extra  # more top-level keys for the body, e.g. the policy that refused


class NotAuthenticated(Refused):
    """The credentials are missing, wrong or no longer valid (401). The API adds the view's
    WWW-Authenticate challenge."""

    status_code = 401
    code = "not_authenticated"
    default_message = "Not authenticated."


class Conflict(Refused):
    """The request is valid but the object is not in a state that allows it (409)."""

    status_code = 409
    code = "conflict"
    default_message = "The object's current state does not allow this."


class TooManyRequests(Refused):
    """Refused for now; ``retry_after`` seconds later it may pass (429 with Retry-After)."""

    status_code = 429
    code = "throttled"
    default_message = "Request was throttled."

    def __init__(self, message: str | None = None, *, retry_after: int, **kwargs):
        headers = {"Retry-After": str(retry_after), **kwargs.pop("headers", {})}
        super().__init__(message, headers=headers, **kwargs)
        self.retry_after = retry_after
