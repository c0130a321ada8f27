"""OpenAPI description of the stream token scheme."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class StreamTokenScheme(OpenApiAuthenticationExtension):
    target_class = "live.authentication.StreamTokenAuthentication"
    name = "streamToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "query",
            "name": "token",
            "description": "A stream token from POST /api/v1/sse/token (for EventSource, which cannot send headers).",
        }
