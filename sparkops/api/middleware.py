"""Refuse oversized request bodies before anything reads them."""

from django.conf import settings
from django.http import JsonResponse

from .exceptions import error_body


class RequestBodyLimitMiddleware:
    """DRF parsers read the request stream directly, bypassing DATA_UPLOAD_MAX_MEMORY_SIZE, so
    the limit is enforced here on the declared length for every endpoint at once."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.SPARKOPS_MAX_REQUEST_BODY_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse(error_body(400, "bad_request", "Invalid Content-Length header."), status=400)
        if length > limit:
            message = f"Request body is {length} bytes; the limit is {limit} bytes."
            return JsonResponse(error_body(413, "request_too_large", message), status=413)
        return self.get_response(request)
