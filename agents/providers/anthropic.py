"""Anthropic's Messages API. Tool calls travel as content blocks: ``tool_use`` in the assistant
turn, ``tool_result`` in the user turn after it."""

from typing import Any

from .base import (
    CompletionRequest,
    CompletionResult,
    Credential,
    Message,
    Provider,
    ProviderError,
    ToolCall,
    ToolSpec,
    get_ok,
    post_json,
)

API_VERSION = "2023-06-01"
# The API refuses a request without max_tokens; this is enough for an agent step.
DEFAULT_MAX_TOKENS = 1024
# Our parameter names, and Anthropic's. Others (OpenAI's penalties) are dropped: the API
# answers 400 to fields it does not know.
PARAMETERS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "stop": "stop_sequences"}


class AnthropicProvider(Provider):
    name = "anthropic"
    label = "Anthropic"
    default_base_url = "https://api.anthropic.com"

    def complete(self, request: CompletionRequest) -> CompletionResult:
        data, latency_ms = post_json(
            f"{self.base_url(request.credential)}/v1/messages",
            headers=self._headers(request.credential),
            body=self._body(request),
            timeout=request.timeout,
            provider=self.label,
        )
        return self._result(data, latency_ms, request.model)

    def health_check(self, *, model: str, credential: Credential, timeout: float = 10.0) -> None:
        # Listing one model costs no tokens and still proves the URL and the key.
        url = f"{self.base_url(credential)}/v1/models?limit=1"
        get_ok(url, headers=self._headers(credential), timeout=timeout, provider=self.label)

    @staticmethod
    def _headers(credential: Credential) -> dict[str, str]:
        return {"x-api-key": credential.api_key, "anthropic-version": API_VERSION}

    def _body(self, request: CompletionRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.parameters.get("max_tokens") or DEFAULT_MAX_TOKENS,
            "messages": wire_messages(request.messages),
        }
        if request.system_prompt:
            body["system"] = request.system_prompt
        if request.tools:
            body["tools"] = [wire_tool(t) for t in request.tools]
        body.update(wire_parameters(request.parameters))
        return body

    def _result(self, data: dict, latency_ms: float, model: str) -> CompletionResult:
        blocks = data.get("content")
        if not isinstance(blocks, list):
            raise ProviderError(f"{self.label} sent a response without content.", permanent=False)
        usage = data.get("usage") or {}
        return CompletionResult(
            text="".join(b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text"),
            tool_calls=[
                parse_tool_use(b, self.label) for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"
            ],
            input_tokens=input_tokens(usage),
            output_tokens=int(usage.get("output_tokens") or 0),
            latency_ms=latency_ms,
            model=data.get("model") or model,
            stop_reason=data.get("stop_reason") or "",
        )


def wire_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    wire = {PARAMETERS[k]: v for k, v in parameters.items() if k in PARAMETERS}
    if isinstance(wire.get("stop_sequences"), str):  # OpenAI's stop may be one string
        wire["stop_sequences"] = [wire["stop_sequences"]]
    return wire


def wire_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Turns with content blocks; consecutive turns of one role become one turn, which is how
    several tool results answer one assistant turn (the API wants them in a single user turn)."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = "assistant" if message.role == "assistant" else "user"
        blocks = wire_blocks(message)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return turns


def wire_blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [{"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.content}]
    # The API refuses empty text blocks; an assistant turn that only calls tools has none.
    blocks: list[dict[str, Any]] = [{"type": "text", "text": message.content}] if message.content else []
    blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in message.tool_calls]
    return blocks


def wire_tool(tool: ToolSpec) -> dict[str, Any]:
    return {"name": tool.name, "description": tool.description, "input_schema": tool.input_schema}


def parse_tool_use(block: dict, provider: str) -> ToolCall:
    if not block.get("id") or not block.get("name") or not isinstance(block.get("input"), dict):
        raise ProviderError(f"{provider} sent a tool_use block without id, name or object input.", permanent=False)
    return ToolCall(id=block["id"], name=block["name"], arguments=block["input"])


def input_tokens(usage: dict) -> int:
    # Prompt-cache reads and writes are reported apart from input_tokens; they are still input
    # the call consumed, and budgets that ignored them would undercount.
    keys = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    return sum(int(usage.get(k) or 0) for k in keys)
