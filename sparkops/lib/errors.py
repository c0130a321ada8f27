"""Refusals that services raise and the API answers as they say, without the service knowing
about HTTP frameworks: a status, a code, a message, field-level errors and extra headers."""


class Refused(Exception):
    status_code = 400
    code = "refused"

    def __init__(self, message: str, *, errors: dict | None = None, headers: dict | None = None, **extra):
        super().__init__(message)
        self.message = message
        self.errors = errors or {}
        self.headers = headers or {}
        self.extra = extra  # more top-level keys for the body, e.g. the policy that refused
