"""Who is acting, and through which channel, for the code that runs now.

The middleware opens a context per request, management commands one per command; workers and beat
run in none and count as the system. The request's user and key are read when an entry is
written, not when the context opens: DRF authenticates inside the view, after the middleware ran,
and sets ``user`` and ``auth`` on the Django request this context holds."""

import re
import uuid
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from sparkops.lib.client_address import client_address

from .choices import Channel

#: A request id a client sends is kept if it looks like one (letters, digits, ``-_.:``), else replaced.
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,100}$")  # as the logs take it (telemetry/logs.py)


@dataclass(frozen=True)
class Actor:
    user: object = None
    api_key: object = None
    label: str = ""

    def as_payload(self) -> dict:
        """What a run event says about who acted: the key when a program did, else the user."""
        if self.api_key is not None:
            return {"api_key_id": str(self.api_key.pk), "api_key_name": self.api_key.name, "user_id": self.user_id}
        if self.user is not None:
            return {"user_id": self.user_id, "email": self.user.email}
        return {"label": self.label} if self.label else {}

    @property
    def user_id(self) -> str | None:
        return str(self.user.pk) if self.user is not None else None


@dataclass
class AuditContext:
    channel: str = Channel.SYSTEM
    request: object = None
    label: str = ""
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def actor(self) -> Actor:
        request = self.request
        user = getattr(request, "user", None)
        if user is None or not getattr(user, "is_authenticated", False):
            return Actor(label=self.label or self.channel)
        auth = getattr(request, "auth", None)
        api_key = auth if getattr(getattr(auth, "_meta", None), "label", "") == "accounts.ApiKey" else None
        label = f"API key {api_key.name} ({api_key.prefix}…) of {user.email}" if api_key else user.email
        return Actor(user=user, api_key=api_key, label=label[:300])

    def client_address(self) -> str | None:
        return (client_address(self.request) or None) if self.request is not None else None


_current: ContextVar[AuditContext | None] = ContextVar("sparkops_audit", default=None)


def current() -> AuditContext:
    return _current.get() or AuditContext()


def current_actor() -> Actor:
    return current().actor()


@contextmanager
def acting(channel: str, *, request=None, label: str = "", request_id: str = ""):
    """Everything audited inside is attributed to this channel (and request, or label)."""
    token = _current.set(
        AuditContext(channel=channel, request=request, label=label, request_id=request_id or uuid.uuid4().hex)
    )
    try:
        yield
    finally:
        _current.reset(token)


def request_id_of(request) -> str:
    """The request's X-Request-ID if it sent a sensible one, else a new one, stored back on the
    request so that every later reader (logging, the response) sees the same id."""
    sent = request.META.get("HTTP_X_REQUEST_ID", "")
    if not REQUEST_ID.match(sent):
        sent = uuid.uuid4().hex
        request.META["HTTP_X_REQUEST_ID"] = sent
    return sent
