"""Documents the error responses every endpoint can give, in the one shape they all share."""

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
    "409": "The object's current state does not allow this (e.g. cancelling a finished run).",
    "413": "Request body too large.",
}
ERROR_REF = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


def _error_codes(path: str, method: str, operation: dict) -> list[str]:
    codes = []
    if method in ("post", "put", "patch"):
        codes += ["400", "413"]
    if any(requirement for requirement in operation.get("security", [])):
        codes += ["401", "403"]
    if "{" in path:
        codes.append("404")
    return codes


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
