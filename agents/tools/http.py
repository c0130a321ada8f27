"""HTTP tools: call an endpoint through the guarded client (SSRF-checked, capped).

Config: ``{"method": "GET", "url": "https://api.example.com/items/{{ id }}", "headers":
{"Authorization": "Bearer {{ credential }}"}, "timeout": 10}``. The URL and header values are
sandboxed templates over the call's arguments; ``credential`` is the tool's decrypted secret.
GET and DELETE send the arguments the URL does not use as query parameters; the other methods
send all arguments as the JSON body.
"""

from urllib.parse import quote

from jinja2 import meta

from sparkops.lib import http

from .base import NO_LIMITS, TEMPLATES, CallLimits, ToolError, ToolExecutor, ToolResult, render, template_errors

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
MAX_TIMEOUT = 120


class HttpExecutor(ToolExecutor):
    kind = "http"

    def validate_config(self, config: dict) -> dict[str, str]:
        errors = {}
        if str(config.get("method", "GET")).upper() not in METHODS:
            errors["method"] = f"Method must be one of {', '.join(sorted(METHODS))}."
        url = config.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            errors["url"] = "A URL template starting with http:// or https:// is required."
        elif problem := template_errors(url):
            errors["url"] = f"Template error: {problem}"
        headers = config.get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            errors["headers"] = "Headers must be an object of strings."
        elif problem := next(filter(None, map(template_errors, headers.values())), None):
            errors["headers"] = f"Template error: {problem}"
        timeout = config.get("timeout", 10)
        if not isinstance(timeout, int | float) or not 0 < timeout <= MAX_TIMEOUT:
            errors["timeout"] = f"Timeout must be a number of seconds in (0, {MAX_TIMEOUT}]."
        return errors

    def execute(self, *, config: dict, arguments: dict, secret: str = "", limits: CallLimits = NO_LIMITS) -> ToolResult:
        method = config.get("method", "GET").upper()
        # Values placed in the URL are percent-encoded so an argument cannot change the host.
        url = render(config["url"], {k: quote(str(v), safe="") for k, v in arguments.items()})
        headers = {k: render(v, {**arguments, "credential": secret}) for k, v in config.get("headers", {}).items()}
        if limits.idempotency_key and not any(name.lower() == "idempotency-key" for name in headers):
            headers["Idempotency-Key"] = limits.idempotency_key  # a key the tool sets itself wins
        query, body = None, None
        if method in ("GET", "DELETE"):
            used = meta.find_undeclared_variables(TEMPLATES.parse(config["url"]))
            query = {k: v for k, v in arguments.items() if k not in used} or None
        else:
            body = arguments
        timeout = config.get("timeout", 10)
        if limits.timeout is not None:
            timeout = min(timeout, limits.timeout)
        try:
            response = http.request(method, url, headers=headers, params=query, json=body, timeout=timeout)
        except http.OutboundError as exc:
            raise ToolError(str(exc), permanent=exc.permanent, timed_out=isinstance(exc, http.TimedOut)) from exc
        if response.status_code >= 400:
            transient = response.status_code in (408, 429) or response.status_code >= 500
            retry_after = response.headers.get("retry-after")
            raise ToolError(
                f"The endpoint answered {response.status_code}: {response.text[:300]}",
                permanent=not transient,
                retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        return ToolResult(output=_decode(response), latency_ms=response.elapsed_ms)


def _decode(response: http.Response):
    if "json" in response.headers.get("content-type", ""):
        try:
            return response.json()
        except ValueError:
            pass
    return response.text
