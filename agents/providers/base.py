"""What every LLM provider adapter speaks. Adapters turn these into one provider's wire format
and back, raise ProviderError (saying whether a retry can help), and never touch run rows."""

import abc
from dataclasses import dataclass, field
from typing import Any

from sparkops.lib import http


@dataclass(frozen=True)
class Credential:
    api_key: str = ""
    base_url: str = ""


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    input_schema: dict


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict


@dataclass
class Message:
    """One turn. ``role`` is user, assistant or tool; a tool turn answers ``tool_call_id``."""

    role: str
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str = ""


@dataclass
class CompletionRequest:
    model: str
    messages: list[Message]
    system_prompt: str = ""
    tools: list[ToolSpec] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    credential: Credential = field(default_factory=Credential)
    timeout: float = 60.0


@dataclass
class CompletionResult:
    text: str
    tool_calls: list[ToolCall]
    input_tokens: int
    output_tokens: int
    latency_ms: float
    model: str
    stop_reason: str = ""


class ProviderError(Exception):
    """A failed provider call. ``permanent`` failures (bad key, unknown model, bad request) are
    not retried; transient ones (429, 5xx, timeouts) are, after ``retry_after`` seconds if given."""

    def __init__(
        self, message: str, *, permanent: bool, retry_after: float | None = None, status_code: int | None = None
    ):
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after
        self.status_code = status_code


class Provider(abc.ABC):
    #: Registry key, stored on agents and credentials.
    name: str = ""
    label: str = ""
    default_base_url: str = ""
    needs_api_key: bool = True

    @abc.abstractmethod
    def complete(self, request: CompletionRequest) -> CompletionResult:
        """One model call."""

    @abc.abstractmethod
    def health_check(self, *, model: str, credential: Credential, timeout: float = 10.0) -> None:
        """The cheapest real call the provider allows; raises ProviderError when unhealthy."""

    def base_url(self, credential: Credential) -> str:
        return (credential.base_url or self.default_base_url).rstrip("/")


# ------------------------------------------------------------------------------
# Shared error classification
# ------------------------------------------------------------------------------
TRANSIENT_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504, 529}


def retry_after_seconds(headers) -> float | None:
    value = headers.get("retry-after") if headers is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date; rare from LLM APIs, and the engine's backoff covers it


def error_for_status(response: http.Response, provider: str) -> ProviderError:
    detail = response.text[:500]
    transient = response.status_code in TRANSIENT_STATUSES or response.status_code >= 500
    return ProviderError(
        f"{provider} answered {response.status_code}: {detail}",
        permanent=not transient,
        retry_after=retry_after_seconds(response.headers),
        status_code=response.status_code,
    )


def error_for_outbound(exc: http.OutboundError, provider: str) -> ProviderError:
    return ProviderError(f"{provider}: {exc}", permanent=exc.permanent)


def post_json(url: str, *, headers: dict, body: dict, timeout: float, provider: str) -> tuple[dict, float]:
    """POST through the guarded client; the decoded JSON body and the latency in ms."""
    try:
        # No redirects: a hop to another host would carry the API key with it (httpx drops
        # Authorization across origins but not x-api-key), and LLM APIs do not redirect.
        response = http.request("POST", url, headers=headers, json=body, timeout=timeout, max_redirects=0)
    except http.OutboundError as exc:
        raise error_for_outbound(exc, provider) from exc
    if response.status_code >= 300:  # an unfollowed redirect is a wrong base URL: permanent
        raise error_for_status(response, provider)
    try:
        data = response.json()
    except ValueError as exc:
        raise ProviderError(f"{provider} sent a body that is not JSON.", permanent=False) from exc
    if not isinstance(data, dict):
        raise ProviderError(f"{provider} sent JSON that is not an object.", permanent=False)
    return data, response.elapsed_ms


def get_ok(url: str, *, headers: dict, timeout: float, provider: str) -> None:
    """GET through the guarded client; raises ProviderError unless the answer is 2xx."""
    try:
        response = http.request("GET", url, headers=headers, timeout=timeout, max_redirects=0)
    except http.OutboundError as exc:
        raise error_for_outbound(exc, provider) from exc
    if not 200 <= response.status_code < 300:
        raise error_for_status(response, provider)
