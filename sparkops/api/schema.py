"""Documents the error responses every endpoint can give, in the one shape they all share.

Which codes an operation can answer follows from its shape, not from a list kept by hand: a
body can be invalid or too large, a query can hold an invalid filter or name an unknown project
or page, a path names an object that may not exist (or be in another project), a delete can be
refused by a rule of the object's state, and a throttled view can answer 429.
"""

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers

ERROR_SCHEMA = {
    "type": "object",
    "description": "The one error shape of the API.",
    "properties": {
        "status": {"type": "integer", "example": 400},
        "code": {"type": "string", "example": "invalid"},
        "message": {"type": "string", "example": "Invalid input: email."},
        "errors": {
            "type": "object",
            "additionalProperties": True,
            "description": "Field-level messages, nested like the request body; {} when no field is at fault.",
            "example": {"email": ["Enter a valid email address."]},
        },
    },
    "required": ["status", "code", "message", "errors"],
}
DESCRIPTIONS = {
    "400": "Invalid input, with field-level messages.",
    "401": "Not authenticated, or the credentials are invalid.",
    "403": "Authenticated, but your role in the project does not allow this.",
    "404": "Not found, or in a project you are not a member of.",
    "409": "The state of the object (e.g. a finished run) or of its project (archived, frozen) does not allow this.",
    "413": "Request body too large.",
    "429": "Too many requests; retry after the Retry-After header's seconds.",
    "503": "A dependency (the database) is unavailable; retry after the Retry-After header's seconds.",
}
THROTTLED = "x-sparkops-throttled"  # set by ErrorAutoSchema, read (and removed) by the hook
ERROR_REF = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


def _error_codes(path: str, method: str, operation: dict) -> list[str]:
    codes = []
    query = [p for p in operation.get("parameters", []) if p.get("in") == "query"]
    if method in ("post", "put", "patch"):
        codes += ["400", "413"]
    if query:
        codes.append("400")  # a filter or page value of the wrong type
    if any(requirement for requirement in operation.get("security", [])):
        codes += ["401", "403"]
    if "{" in path or any(p["name"] in ("project", "page") for p in query):
        codes.append("404")  # the object, the filtered project or the page does not exist for you
    if method == "delete":
        codes.append("400")  # a rule refuses it (the last owner)
    secured = any(requirement for requirement in operation.get("security", []))
    if method == "delete" or (method in ("post", "put", "patch") and secured):
        codes.append("409")  # a state rule refuses it, or the project is archived (read-only)
    codes.append("503")  # the database is unavailable
    if operation.pop(THROTTLED, False):
        codes.append("429")
    return codes


class ErrorAutoSchema(AutoSchema):
    """Marks operations of throttled views, which only the view knows, for add_error_responses,
    and says what the JSON documents we accept are."""

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if direction == "request" and isinstance(field, serializers.JSONField) and not field.allow_null:
            # Every JSON document the API takes (configs, definitions, inputs, JSON Schemas) is an
            # object; left untyped, the schema would promise that null or a bare string is valid.
            schema = {"type": "object", "additionalProperties": {}, **schema}
        return schema

    def get_operation(self, *args, **kwargs):
        operation = super().get_operation(*args, **kwargs)
        if operation is not None and getattr(self.view, "throttle_classes", None):
            operation[THROTTLED] = True
        return operation


def add_error_responses(result, generator, request, public):
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for code in _error_codes(path, method, operation):
                responses.setdefault(code, {"description": DESCRIPTIONS[code]})
            for code, response in responses.items():
                if code[0] in "45" and "content" not in response:
                    response["content"] = ERROR_REF
    return result
