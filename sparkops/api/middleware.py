"""Refuse oversized request bodies before anything reads them, and keep every /api/ response in
the API's own shape: JSON errors and no caching."""

import json

from django.conf import settings
from django.http import JsonResponse
from django.utils.cache import patch_cache_control

from .exceptions import error_body

API_PREFIX = "/api/"


def _too_large(length: int, limit: int) -> dict:
    return error_body(413, "request_too_large", f"Request body is {length} bytes; the limit is {limit} bytes.")


def _chunked_too_large(limit: int) -> dict:
    return error_body(413, "request_too_large", f"Request body is over the limit of {limit} bytes.")


class RequestBodyLimitMiddleware:
    """DRF parsers read the request stream directly, bypassing DATA_UPLOAD_MAX_MEMORY_SIZE, so
    the limit is enforced here on the declared length for every endpoint at once. Bodies with no
    declared length are measured by RequestBodyLimitASGI before Django sees them; one that still
    arrives here (a WSGI server) would be read as empty, so it is refused as such."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.SPARKOPS_MAX_REQUEST_BODY_BYTES
        declared = request.META.get("CONTENT_LENGTH")
        try:
            length = int(declared or 0)
        except ValueError:
            return JsonResponse(error_body(400, "bad_request", "Invalid Content-Length header."), status=400)
        if length > limit:
            return JsonResponse(_too_large(length, limit), status=413)
        if not declared and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            message = "A chunked request body is not supported here; send a Content-Length header."
            return JsonResponse(error_body(411, "length_required", message), status=411)
        return self.get_response(request)


class RequestBodyLimitASGI:
    """ASGI middleware around Django: caps bodies sent without a Content-Length (chunked) too.

    Django's ASGI handler reads a whole body into a temporary file before any middleware runs,
    and DRF reads a body with no Content-Length as empty. So a chunked body is buffered here up to
    the limit (413 as soon as it passes it) and handed on with the Content-Length it turned out
    to have; a declared length over the limit is refused before a byte of the body is read."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = settings.SPARKOPS_MAX_REQUEST_BODY_BYTES
        declared = _header(scope, b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > limit:
                return await _send_json(send, 413, _too_large(int(declared), limit))
            return await self.app(scope, receive, send)  # Django checks the rest
        body = await _read_up_to(receive, limit)
        if body is None:
            return None  # the client went away
        if len(body) > limit:
            return await _send_json(send, 413, _chunked_too_large(limit))
        headers = [*scope.get("headers", []), (b"content-length", str(len(body)).encode())]
        return await self.app({**scope, "headers": headers}, _replay(body, receive), send)


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin1").strip()
    return None


async def _read_up_to(receive, limit: int) -> bytes | None:
    """The whole body, or its first limit + 1 bytes once it is longer; None on a disconnect."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[: limit + 1]
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive):
    delivered = False

    async def replayed():
        nonlocal delivered
        if delivered:
            return await receive()  # Django listens for the disconnect after the body
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


async def _send_json(send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"),
        (b"connection", b"close"),  # the rest of the body is never read
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class ApiResponseMiddleware:
    """Every /api/ response in the API's shape, whatever produced it.

    Errors raised outside DRF (an unknown path, Django's DEBUG pages for 404 and 500) come back
    as HTML; here they become the JSON error shape. And nothing under /api/ may be cached: the
    answers are per caller and carry their data."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if not request.path.startswith(API_PREFIX):
            return response
        if response.status_code >= 400 and "json" not in response.get("Content-Type", ""):
            response = _as_error_shape(response)
        patch_cache_control(response, no_store=True)
        return response


def _as_error_shape(response):
    codes = {404: ("not_found", "Not found."), 405: ("method_not_allowed", "Method not allowed.")}
    status = response.status_code
    code, message = codes.get(status, ("server_error", "Internal server error."))
    if 400 <= status < 500 and status not in codes:
        code, message = "bad_request", response.reason_phrase or "Bad request."
    replacement = JsonResponse(error_body(status, code, message), status=status)
    for header in ("Allow", "Retry-After", "WWW-Authenticate"):
        if header in response:
            replacement[header] = response[header]
    return replacement
