"""One error shape for every 4xx/5xx the API answers.

    {"status": 400, "code": "invalid", "message": "Invalid input.",
     "errors": {"email": ["Enter a valid email address."]}}

``errors`` holds field-level messages (nested like the request body) and is ``{}`` when the
error is not about a field. Tracebacks never reach a client outside DEBUG.
"""

import logging
import sys
from collections import Counter
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.db.models import ProtectedError, RestrictedError
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from sparkops.lib.errors import Refused

NON_FIELD_KEY = "non_field_errors"
# What a client should wait before trying again when the database is unreachable.
DATABASE_RETRY_AFTER_SECONDS = 5

log = logging.getLogger(__name__)


def error_body(status_code: int, code: str, message: str, errors: dict | None = None) -> dict[str, Any]:
    return {"status": status_code, "code": code, "message": message, "errors": errors or {}}


def _first_message(detail: Any) -> str:
    while isinstance(detail, dict | list) and detail:
        detail = next(iter(detail.values())) if isinstance(detail, dict) else detail[0]
    return str(detail) if detail else "Invalid input."


def _as_lists(errors: dict) -> dict:
    """Every field's messages as a list, as serializers give them, even when a view raised a
    bare string for a field."""
    return {
        key: _as_lists(value) if isinstance(value, dict) else value if isinstance(value, list) else [value]
        for key, value in errors.items()
    }


def _validation_body(exc: exceptions.ValidationError) -> dict[str, Any]:
    detail = exc.detail
    errors = _as_lists(detail) if isinstance(detail, dict) else {NON_FIELD_KEY: detail}
    message = _first_message(errors)
    if isinstance(detail, dict) and not set(detail) <= {NON_FIELD_KEY}:
        message = "Invalid input: " + ", ".join(k for k in detail if k != NON_FIELD_KEY) + "."
    return error_body(exc.status_code, "invalid", message, errors)


def _from_django(exc: Exception) -> Exception:
    """Django's exceptions, raised by services and models, as DRF's, keeping their messages."""
    if isinstance(exc, DjangoValidationError):
        if isinstance(nested := getattr(exc, "errors", None), dict):
            # A refusal that keeps nested messages (a workflow's per-step errors) keeps its shape;
            # its flat Django messages are for forms.
            return exceptions.ValidationError(nested)
        if not hasattr(exc, "error_dict"):
            return exceptions.ValidationError(exc.messages)
        errors = exc.message_dict
        if NON_FIELD_ERRORS in errors:
            errors[NON_FIELD_KEY] = errors.pop(NON_FIELD_ERRORS)
        return exceptions.ValidationError(errors)
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied(*exc.args)
    if isinstance(exc, Http404):
        return exceptions.NotFound()
    return exc


def _still_referenced_response(exc: ProtectedError | RestrictedError) -> Response:
    """A delete that other rows still need (a PROTECT or RESTRICT foreign key): 409 naming them,
    for any delete a service did not turn into a clearer refusal itself."""
    referrers = getattr(exc, "protected_objects", None) or getattr(exc, "restricted_objects", None) or []
    counts = Counter(str(obj._meta.verbose_name_plural) for obj in referrers)
    named = ", ".join(f"{count} {name}" for name, count in sorted(counts.items())) or "other objects"
    message = f"This cannot be deleted: {named} still refer to it."
    return Response(error_body(409, "protected", message), status=status.HTTP_409_CONFLICT)


def _refusal_response(exc: Refused, context: dict) -> Response:
    """A service's refusal as it says: its status, code, message, errors, headers and extra keys."""
    body = {**error_body(exc.status_code, exc.code, exc.message, exc.errors), **exc.extra}
    headers = dict(exc.headers)
    if exc.status_code == status.HTTP_401_UNAUTHORIZED and (challenge := _challenge(context)):
        headers.setdefault("WWW-Authenticate", challenge)  # a 401 names the scheme to use
    return Response(body, status=exc.status_code, headers=headers)


def _challenge(context: dict) -> str | None:
    view, request = context.get("view"), context.get("request")
    if view is None or request is None or not hasattr(view, "get_authenticate_header"):
        return None
    return view.get_authenticate_header(request)


def _database_unavailable(exc: BaseException | None) -> bool:
    """The database could not be reached or dropped the connection (OperationalError: refused,
    terminated, too many clients; InterfaceError: the connection is already closed). Transient
    for the client: 503 with Retry-After, not a 500 that says we have a bug."""
    return isinstance(exc, OperationalError | InterfaceError)


def _unavailable_body() -> dict[str, Any]:
    return error_body(503, "database_unavailable", "The database is unavailable; try again shortly.")


def _unavailable_headers() -> dict[str, str]:
    return {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)}


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, Refused):
        return _refusal_response(exc, context)
    if _database_unavailable(exc):
        # The driver's text (host, port, user) goes to the log only.
        log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
        return Response(_unavailable_body(), status=503, headers=_unavailable_headers())
    if isinstance(exc, ProtectedError | RestrictedError):
        return _still_referenced_response(exc)
    exc = _from_django(exc)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # Django turns it into a 500 through handler500, with the same shape.
    if isinstance(exc, exceptions.ValidationError):
        response.data = _validation_body(exc)
        return response
    detail = getattr(exc, "detail", None)
    if isinstance(detail, dict) and {"detail", "code"} <= set(detail):  # simplejwt's token errors
        response.data = error_body(response.status_code, str(detail["code"]), str(detail["detail"]))
        return response
    if isinstance(detail, dict | list):
        response.data = error_body(response.status_code, "invalid", _first_message(detail), {NON_FIELD_KEY: detail})
        return response
    code = detail.code if isinstance(detail, exceptions.ErrorDetail) and detail.code else "error"
    response.data = error_body(response.status_code, code, str(detail or response.status_text))
    return response


def _wants_json(request) -> bool:
    return request.path.startswith(("/api/", "/health", "/openapi")) or "json" in request.headers.get("Accept", "")


def handler404(request, exception=None):
    if _wants_json(request):
        return JsonResponse(error_body(404, "not_found", "Not found."), status=status.HTTP_404_NOT_FOUND)
    return defaults.page_not_found(request, exception)


def handler500(request):
    # Called while the exception is being handled: outside DRF views (middleware, the admin), a
    # database outage is a 503 too.
    if _database_unavailable(sys.exc_info()[1]):
        if _wants_json(request):
            return JsonResponse(_unavailable_body(), status=503, headers=_unavailable_headers())
        response = defaults.server_error(request)
        response.status_code = 503
        response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return response
    if _wants_json(request):
        body = error_body(500, "server_error", "Internal server error.")
        return JsonResponse(body, status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    return defaults.server_error(request)


def handler400(request, exception=None):
    if _wants_json(request):
        return JsonResponse(error_body(400, "bad_request", "Bad request."), status=status.HTTP_400_BAD_REQUEST)
    return defaults.bad_request(request, exception)


def handler403(request, exception=None):
    if _wants_json(request):
        return JsonResponse(error_body(403, "permission_denied", "Forbidden."), status=status.HTTP_403_FORBIDDEN)
    return defaults.permission_denied(request, exception)
