"""A provider that needs no network: it answers deterministically from its input.

For demos and tests. It counts tokens like the others (about four characters a token) and can
ask for a tool: a prompt line ``[[tool:NAME {"json": "arguments"}]]`` becomes a tool call when the
agent may use NAME and no tool result has come back yet.
"""

import json
import math
import re
import time

from .base import CompletionRequest, CompletionResult, Credential, Provider, ToolCall

TOOL_DIRECTIVE = re.compile(r"\[\[tool:(?P<name>[\w-]+)\s*(?P<args>\{.*?\})?\]\]", re.DOTALL)


def count_tokens(text: str) -> int:
    return math.ceil(len(text) / 4) if text else 0


class EchoProvider(Provider):
    name = "echo"
    label = "Echo (offline, deterministic)"
    needs_api_key = False

    def complete(self, request: CompletionRequest) -> CompletionResult:
        started = time.monotonic()
        prompt = "\n".join(m.content for m in request.messages)
        input_tokens = count_tokens(request.system_prompt) + count_tokens(prompt)
        tool_calls = self._tool_calls(request)
        text = "" if tool_calls else self._answer(request)
        output_tokens = count_tokens(text) + sum(count_tokens(json.dumps(c.arguments)) for c in tool_calls)
        return CompletionResult(
            text=text,
            tool_calls=tool_calls,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_ms=(time.monotonic() - started) * 1000,
            model=request.model,
            stop_reason="tool_use" if tool_calls else "end_turn",
        )

    def health_check(self, *, model: str, credential: Credential, timeout: float = 10.0) -> None:
        return None

    @staticmethod
    def _answer(request: CompletionRequest) -> str:
        last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        tool_results = [m.content for m in request.messages if m.role == "tool"]
        answer = f"echo: {TOOL_DIRECTIVE.sub('', last_user).strip()}"
        if tool_results:
            answer += " | tool results: " + " ; ".join(tool_results)
        return answer

    @staticmethod
    def _tool_calls(request: CompletionRequest) -> list[ToolCall]:
        if any(m.role == "tool" for m in request.messages):
            return []
        allowed = {t.name for t in request.tools}
        last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        calls = []
        for n, match in enumerate(TOOL_DIRECTIVE.finditer(last_user)):
            if match["name"] in allowed:
                arguments = json.loads(match["args"]) if match["args"] else {}
                calls.append(ToolCall(id=f"echo-call-{n}", name=match["name"], arguments=arguments))
        return calls
