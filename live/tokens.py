"""Stream tokens: what a browser's EventSource, which cannot send headers, opens the stream
with (``?token=``). Signed, short-lived, good only for opening a stream: the token names the
user, the projects it was asked for (or none: all of the user's) and the API key it was made
with, and the stream checks each again when it opens."""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core import signing
from django.utils import timezone

SALT = "sparkops.live.stream-token"


@dataclass(frozen=True)
class StreamGrant:
    """``request.auth`` of a stream opened with a token."""

    user_id: str
    projects: frozenset[uuid.UUID] | None  # None: every project of the user
    api_key_id: str | None


def stream_token_mint(*, user, projects: list[uuid.UUID] | None, api_key=None) -> tuple[str, datetime]:
    payload = {"u": str(user.pk), "p": sorted(str(p) for p in projects) if projects else None}
    payload["k"] = str(api_key.pk) if api_key is not None else None
    expires = timezone.now() + timedelta(seconds=settings.SPARKOPS_SSE_TOKEN_SECONDS)
    return signing.dumps(payload, salt=SALT), expires


def stream_token_read(token: str) -> StreamGrant:
    """Raises signing.BadSignature (SignatureExpired included) for a token not ours or too old."""
    payload = signing.loads(token, salt=SALT, max_age=settings.SPARKOPS_SSE_TOKEN_SECONDS)
    projects = payload.get("p")
    return StreamGrant(
        user_id=payload["u"],
        projects=frozenset(uuid.UUID(p) for p in projects) if projects else None,
        api_key_id=payload.get("k"),
    )
