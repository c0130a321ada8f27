"""OpenAI's Chat Completions wire format, spoken by OpenAI itself and by most self-hosted and
proxy servers (Azure OpenAI v1, vLLM, Ollama, LiteLLM, llama.cpp): the credential's base URL
picks the server.

Tool-call arguments arrive as a JSON string the model wrote. When that string is not a JSON
object the call fails as *transient*: the model, not the request, is at fault, and a fresh
sample usually gets it right; the engine's bounded retries keep a stubborn model from looping.
"""

import json
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

# Passed through when set. Other keys are dropped: they belong to other providers (Anthropic's
# top_k) and strict servers answer 400 to fields they do not know.
PARAMETERS = ("temperature", "max_tokens", "top_p", "stop", "presence_penalty", "frequency_penalty")


class OpenAICompatibleProvider(Provider):
    name = "openai"
    label = "OpenAI-compatible"
    default_base_url = "https://api.openai.com/v1"
    # Self-hosted servers (Ollama, vLLM) often take no key; api.openai.com answers 401 without one.
    needs_api_key = False

    def complete(self, request: CompletionRequest) -> CompletionResult:
        data, latency_ms = post_json(
            f"{self.base_url(request.credential)}/chat/completions",
            headers=self._headers(request.credential),
            body=self._body(request),
            timeout=request.timeout,
            provider=self.label,
        )
        return self._result(data, latency_ms, request.model)

    def health_check(self, *, model: str, credential: Credential, timeout: float = 10.0) -> None:
        # Listing models costs no tokens and still proves the URL and the key.
        get_ok(
            f"{self.base_url(credential)}/models",
            headers=self._headers(credential),
            timeout=timeout,
            provider=self.label,
        )

    @staticmethod
    def _headers(credential: Credential) -> dict[str, str]:
        return {"Authorization": f"Bearer {credential.api_key}"} if credential.api_key else {}

    def _body(self, request: CompletionRequest) -> dict[str, Any]:
        messages = [{"role": "system", "content": request.system_prompt}] if request.system_prompt else []
        messages += [wire_message(m) for m in request.messages]
        body: dict[str, Any] = {"model": request.model, "messages": messages}
        if request.tools:
            body["tools"] = [wire_tool(t) for t in request.tools]
        body.update({k: v for k, v in request.parameters.items() if k in PARAMETERS})
        return body

    def _result(self, data: dict, latency_ms: float, model: str) -> CompletionResult:
        choice = first_choice(data, self.label)
        message = choice["message"]
        # Some servers omit usage (older vLLM builds); the answer is still good, so count zero.
        usage = data.get("usage") or {}
        return CompletionResult(
            text=message_text(message.get("content")),
            tool_calls=[parse_tool_call(n, c, self.label) for n, c in enumerate(message.get("tool_calls") or [])],
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            latency_ms=latency_ms,
            model=data.get("model") or model,
            stop_reason=choice.get("finish_reason") or "",
        )


def wire_message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    wire: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        # OpenAI wants null, not "", beside tool calls when the model said nothing.
        wire["content"] = message.content or None
        wire["tool_calls"] = [wire_tool_call(c) for c in message.tool_calls]
    return wire


def wire_tool_call(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}


def wire_tool(tool: ToolSpec) -> dict[str, Any]:
    function = {"name": tool.name, "description": tool.description, "parameters": tool.input_schema}
    return {"type": "function", "function": function}


def first_choice(data: dict, provider: str) -> dict:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        # Some proxies answer 200 with {"error": ...}; say what they said.
        detail = f": {str(data['error'])[:300]}" if "error" in data else ""
        raise ProviderError(f"{provider} sent a response without choices{detail}.", permanent=False)
    if not isinstance(choices[0].get("message"), dict):
        raise ProviderError(f"{provider} sent a choice without a message.", permanent=False)
    return choices[0]


def message_text(content: Any) -> str:
    if isinstance(content, list):  # content parts, from servers that mirror the request shape
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def parse_tool_call(n: int, wire: Any, provider: str) -> ToolCall:
    function = wire.get("function") if isinstance(wire, dict) else None
    if not isinstance(function, dict) or not function.get("name"):
        raise ProviderError(f"{provider} sent a tool call without a function name.", permanent=False)
    # Ollama has sent calls without ids; the id only has to pair the call with its result.
    call_id = wire.get("id") or f"call_{n}"
    return ToolCall(id=call_id, name=function["name"], arguments=parse_arguments(function, provider))


def parse_arguments(function: dict, provider: str) -> dict:
    raw = function.get("arguments")
    if isinstance(raw, dict):  # some servers send the object itself
        return raw
    if not raw:  # "" or missing: a tool that takes no arguments
        return {}
    try:
        arguments = json.loads(raw)
    except (TypeError, ValueError):
        arguments = None
    if not isinstance(arguments, dict):
        name = function["name"]
        raise ProviderError(
            f"{provider} model sent arguments for {name} that are not a JSON object: {str(raw)[:200]}", permanent=False
        )
    return arguments
