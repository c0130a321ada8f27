"""Provider adapters against a real local HTTP server speaking each wire format (and respx for
the default public URLs, which tests must never reach)."""

import socket

import httpx
import pytest

from agents import providers
from agents.providers.anthropic import AnthropicProvider
from agents.providers.base import (
    CompletionRequest,
    Credential,
    Message,
    Provider,
    ProviderError,
    ToolCall,
    ToolSpec,
)
from agents.providers.echo import EchoProvider, count_tokens
from agents.providers.openai_compatible import OpenAICompatibleProvider

from .provider_server import ProviderServer

OPENAI = OpenAICompatibleProvider()
ANTHROPIC = AnthropicProvider()
HTTP_PROVIDERS = [pytest.param(OPENAI, id="openai"), pytest.param(ANTHROPIC, id="anthropic")]
WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather for a city.",
    input_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


@pytest.fixture
def server(settings):
    # The guarded client refuses loopback unless allowed; these tests talk to 127.0.0.1.
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    fake = ProviderServer().start()
    yield fake
    fake.stop()


@pytest.fixture
def credential(server) -> Credential:
    return Credential(api_key="sk-test", base_url=server.url)


def ask(credential: Credential, *, messages=None, **options) -> CompletionRequest:
    messages = messages or [Message(role="user", content="What is the capital of France?")]
    return CompletionRequest(model="test-model", messages=messages, credential=credential, **options)


def openai_answer(content="Paris.", *, tool_calls=None, finish_reason="stop") -> dict:
    message = {"role": "assistant", "content": content, "tool_calls": tool_calls}
    return {
        "id": "chatcmpl-1",
        "model": "test-model-0613",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 21, "completion_tokens": 3, "total_tokens": 24},
    }


def anthropic_answer(*blocks: dict, stop_reason="end_turn") -> dict:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "test-model-20250101",
        "content": list(blocks) or [{"type": "text", "text": "Paris."}],
        "stop_reason": stop_reason,
        "usage": {"input_tokens": 25, "output_tokens": 4},
    }


def scripted_ok(provider: Provider) -> dict:
    return openai_answer() if provider is OPENAI else anthropic_answer()


def call_error(provider: Provider, request: CompletionRequest) -> ProviderError:
    with pytest.raises(ProviderError) as excinfo:
        provider.complete(request)
    return excinfo.value


# ------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------
def test_registry_lists_the_http_providers_by_name_and_label():
    assert {"anthropic", "echo", "openai"} <= set(providers.names())
    assert ("openai", "OpenAI-compatible") in providers.choices()
    assert providers.get("anthropic").label == "Anthropic"


# ------------------------------------------------------------------------------
# OpenAI-compatible: wire format
# ------------------------------------------------------------------------------
def test_openai_plain_answer_reports_text_tokens_and_finish_reason(server, credential):
    server.reply(openai_answer())
    parameters = {"temperature": 0.2, "max_tokens": 50, "stop": ["\n\n"], "top_k": 5}

    result = OPENAI.complete(ask(credential, system_prompt="Be brief.", parameters=parameters))

    assert (result.text, result.input_tokens, result.output_tokens) == ("Paris.", 21, 3)
    assert (result.stop_reason, result.model, result.tool_calls) == ("stop", "test-model-0613", [])
    assert result.latency_ms > 0
    sent = server.requests[0]
    assert (sent.method, sent.path, sent.headers["authorization"]) == ("POST", "/chat/completions", "Bearer sk-test")
    assert sent.json() == {
        "model": "test-model",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        "temperature": 0.2,
        "max_tokens": 50,
        "stop": ["\n\n"],
    }  # top_k is Anthropic's: dropped, no tools key


def test_openai_tool_call_round_trip(server, credential):
    call = {"id": "call_7", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    server.reply(openai_answer(None, tool_calls=[call], finish_reason="tool_calls"))
    first = ask(credential, messages=[Message(role="user", content="Weather in Oslo?")], tools=[WEATHER])

    result = OPENAI.complete(first)

    assert result.tool_calls == [ToolCall(id="call_7", name="get_weather", arguments={"city": "Oslo"})]
    assert (result.text, result.stop_reason) == ("", "tool_calls")
    assert server.requests[0].json()["tools"] == [
        {"type": "function", "function": {"name": "get_weather", **without_name(WEATHER)}}
    ]

    server.reply(openai_answer("It is 4°C in Oslo."))
    history = [*first.messages, Message(role="assistant", tool_calls=result.tool_calls)]
    history.append(Message(role="tool", content='{"celsius": 4}', tool_call_id="call_7"))
    assert OPENAI.complete(ask(credential, messages=history, tools=[WEATHER])).text == "It is 4°C in Oslo."

    assert server.requests[1].json()["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_7", "content": '{"celsius": 4}'},
    ]


def without_name(tool: ToolSpec) -> dict:
    return {"description": tool.description, "parameters": tool.input_schema}


def test_openai_malformed_tool_arguments_are_a_transient_error(server, credential):
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": '}}
    server.reply(openai_answer(None, tool_calls=[call]))

    error = call_error(OPENAI, ask(credential, tools=[WEATHER]))

    assert not error.permanent
    assert "get_weather" in str(error)
    assert "not a JSON object" in str(error)


def test_openai_tolerates_empty_arguments_missing_ids_and_missing_usage(server, credential):
    answer = openai_answer(None, tool_calls=[{"type": "function", "function": {"name": "now", "arguments": ""}}])
    del answer["usage"]
    server.reply(answer)

    result = OPENAI.complete(ask(credential))

    assert result.tool_calls == [ToolCall(id="call_0", name="now", arguments={})]
    assert (result.input_tokens, result.output_tokens) == (0, 0)


def test_openai_sends_no_authorization_without_an_api_key(server):
    server.reply(openai_answer())

    OPENAI.complete(ask(Credential(base_url=server.url)))

    assert "authorization" not in server.requests[0].headers


def test_openai_base_url_override_keeps_its_path(server):
    server.reply(openai_answer())

    OPENAI.complete(ask(Credential(api_key="k", base_url=f"{server.url}/proxy/v1/")))

    assert server.requests[0].path == "/proxy/v1/chat/completions"


def test_openai_json_without_choices_is_a_transient_error(server, credential):
    server.reply({"error": {"message": "upstream exploded"}})

    error = call_error(OPENAI, ask(credential))

    assert not error.permanent
    assert "without choices" in str(error)
    assert "upstream exploded" in str(error)


# ------------------------------------------------------------------------------
# Anthropic: wire format
# ------------------------------------------------------------------------------
def test_anthropic_plain_answer_reports_text_tokens_and_stop_reason(server, credential):
    server.reply(anthropic_answer())
    parameters = {"temperature": 0.2, "stop": "###", "presence_penalty": 1}

    result = ANTHROPIC.complete(ask(credential, system_prompt="Be brief.", parameters=parameters))

    assert (result.text, result.input_tokens, result.output_tokens) == ("Paris.", 25, 4)
    assert (result.stop_reason, result.model) == ("end_turn", "test-model-20250101")
    sent = server.requests[0]
    assert (sent.path, sent.headers["x-api-key"], sent.headers["anthropic-version"]) == (
        "/v1/messages",
        "sk-test",
        "2023-06-01",
    )
    assert sent.json() == {
        "model": "test-model",
        "max_tokens": 1024,  # required by the API; defaulted
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}],
        "temperature": 0.2,
        "stop_sequences": ["###"],
    }  # presence_penalty is OpenAI's: dropped


def test_anthropic_tool_call_round_trip_merges_tool_results_into_one_user_turn(server, credential):
    server.reply(
        anthropic_answer(
            {"type": "text", "text": "Checking both."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
            stop_reason="tool_use",
        )
    )
    first = ask(credential, messages=[Message(role="user", content="Oslo or Rome?")], tools=[WEATHER])

    result = ANTHROPIC.complete(first)

    assert result.text == "Checking both."
    assert [c.arguments for c in result.tool_calls] == [{"city": "Oslo"}, {"city": "Rome"}]
    assert server.requests[0].json()["tools"] == [
        {"name": "get_weather", "description": WEATHER.description, "input_schema": WEATHER.input_schema}
    ]

    server.reply(anthropic_answer({"type": "text", "text": "Rome is warmer."}))
    history = [*first.messages, Message(role="assistant", content=result.text, tool_calls=result.tool_calls)]
    history += [Message(role="tool", content="4", tool_call_id="toolu_1")]
    history += [Message(role="tool", content="19", tool_call_id="toolu_2")]
    ANTHROPIC.complete(ask(credential, messages=history, tools=[WEATHER]))

    assert server.requests[1].json()["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "4"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "19"},
            ],
        },
    ]


def test_anthropic_passes_max_tokens_and_counts_cache_tokens_as_input(server, credential):
    answer = anthropic_answer()
    answer["usage"] |= {"cache_read_input_tokens": 100, "cache_creation_input_tokens": 10}
    server.reply(answer)

    result = ANTHROPIC.complete(ask(credential, parameters={"max_tokens": 64}))

    assert server.requests[0].json()["max_tokens"] == 64
    assert result.input_tokens == 135


def test_anthropic_json_without_content_is_a_transient_error(server, credential):
    server.reply({"type": "message", "usage": {"input_tokens": 1, "output_tokens": 1}})

    error = call_error(ANTHROPIC, ask(credential))

    assert not error.permanent
    assert "without content" in str(error)


# ------------------------------------------------------------------------------
# Both: error mapping
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("provider", HTTP_PROVIDERS)
@pytest.mark.parametrize(
    ("status", "permanent"),
    [(400, True), (401, True), (403, True), (404, True), (422, True), (500, False), (503, False), (529, False)],
)
def test_status_codes_map_to_permanent_or_transient(server, credential, provider, status, permanent):
    server.reply({"error": {"message": "model not found" if status == 404 else "nope"}}, status=status)

    error = call_error(provider, ask(credential))

    assert (error.permanent, error.status_code) == (permanent, status)
    assert str(status) in str(error)


@pytest.mark.parametrize("provider", HTTP_PROVIDERS)
def test_rate_limit_is_transient_with_retry_after(server, credential, provider):
    server.reply({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "7"})

    error = call_error(provider, ask(credential))

    assert (error.permanent, error.retry_after, error.status_code) == (False, 7.0, 429)


@pytest.mark.parametrize("provider", HTTP_PROVIDERS)
def test_timeout_is_transient(server, credential, provider):
    server.reply(scripted_ok(provider), delay=5)  # cut short when the server stops

    error = call_error(provider, ask(credential, timeout=0.3))

    assert not error.permanent
    assert "Timed out" in str(error)


@pytest.mark.parametrize("provider", HTTP_PROVIDERS)
def test_body_that_is_not_json_is_a_transient_error(server, credential, provider):
    server.reply(body=b"<html>Bad gateway</html>", headers={"Content-Type": "text/html"})

    error = call_error(provider, ask(credential))

    assert not error.permanent
    assert "not JSON" in str(error)


@pytest.mark.parametrize("provider", HTTP_PROVIDERS)
def test_redirects_are_not_followed_so_keys_stay_put(server, credential, provider):
    server.reply(status=307, body=b"", headers={"Location": "http://127.0.0.1:9/elsewhere"})

    error = call_error(provider, ask(credential))

    assert (error.permanent, error.status_code) == (True, 307)
    assert len(server.requests) == 1


@pytest.mark.parametrize("provider", HTTP_PROVIDERS)
def test_connection_refused_is_transient(settings, provider):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    error = call_error(provider, ask(Credential(api_key="k", base_url=f"http://127.0.0.1:{port}")))

    assert not error.permanent


@pytest.mark.parametrize("provider", HTTP_PROVIDERS)
def test_loopback_base_url_is_refused_permanently_when_not_allowed(server, settings, provider):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = []
    credential = Credential(api_key="sk-test", base_url=server.url)

    error = call_error(provider, ask(credential))
    with pytest.raises(ProviderError) as health:
        provider.health_check(model="m", credential=credential)

    assert error.permanent
    assert health.value.permanent
    assert "non-public address" in str(error)
    assert server.requests == []


# ------------------------------------------------------------------------------
# Both: health checks
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("provider", "path", "auth_header", "auth_value"),
    [
        pytest.param(OPENAI, "/models", "authorization", "Bearer sk-test", id="openai"),
        pytest.param(ANTHROPIC, "/v1/models?limit=1", "x-api-key", "sk-test", id="anthropic"),
    ],
)
def test_health_check_lists_models_without_spending_tokens(server, credential, provider, path, auth_header, auth_value):
    server.reply({"data": [{"id": "test-model"}]})

    assert provider.health_check(model="test-model", credential=credential) is None

    sent = server.requests[0]
    assert (sent.method, sent.path, sent.headers[auth_header]) == ("GET", path, auth_value)


@pytest.mark.parametrize("provider", HTTP_PROVIDERS)
@pytest.mark.parametrize(("status", "permanent"), [(401, True), (503, False)])
def test_health_check_failure_raises_provider_error(server, credential, provider, status, permanent):
    server.reply({"error": {"message": "no"}}, status=status)

    with pytest.raises(ProviderError) as excinfo:
        provider.health_check(model="test-model", credential=credential)

    assert (excinfo.value.permanent, excinfo.value.status_code) == (permanent, status)


# ------------------------------------------------------------------------------
# Default public URLs (respx: nothing leaves the machine)
# ------------------------------------------------------------------------------
def test_openai_defaults_to_the_public_api(respx_mock):
    route = respx_mock.post("https://api.openai.com/v1/chat/completions").mock(
        return_value=httpx.Response(200, json=openai_answer("Hi."))
    )

    result = OPENAI.complete(ask(Credential(api_key="sk-live")))

    assert result.text == "Hi."
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-live"


def test_anthropic_defaults_to_the_public_api(respx_mock):
    route = respx_mock.post("https://api.anthropic.com/v1/messages").mock(
        return_value=httpx.Response(429, headers={"retry-after": "2"}, json={"type": "error"})
    )

    error = call_error(ANTHROPIC, ask(Credential(api_key="sk-ant")))

    assert (error.permanent, error.retry_after) == (False, 2.0)
    assert route.calls.last.request.headers["anthropic-version"] == "2023-06-01"


# ------------------------------------------------------------------------------
# Echo
# ------------------------------------------------------------------------------
ECHO = EchoProvider()


def test_echo_answers_deterministically():
    request = ask(Credential(), system_prompt="Be brief.")

    first, second = ECHO.complete(request), ECHO.complete(request)

    assert first.text == second.text == "echo: What is the capital of France?"
    assert (first.input_tokens, first.output_tokens) == (second.input_tokens, second.output_tokens)


def test_echo_counts_about_four_characters_a_token():
    request = ask(Credential(), system_prompt="12345")  # 5 chars: 2 tokens

    result = ECHO.complete(request)

    assert [count_tokens(""), count_tokens("abcd"), count_tokens("abcde")] == [0, 1, 2]
    assert result.input_tokens == 2 + count_tokens("What is the capital of France?")
    assert result.output_tokens == count_tokens(result.text)


def test_echo_tool_directive_calls_an_allowed_tool_once():
    prompt = 'Weather? [[tool:get_weather {"city": "Oslo"}]]'
    messages = [Message(role="user", content=prompt)]

    called = ECHO.complete(ask(Credential(), messages=messages, tools=[WEATHER]))
    messages += [Message(role="assistant", tool_calls=called.tool_calls)]
    messages += [Message(role="tool", content="4C", tool_call_id=called.tool_calls[0].id)]
    answered = ECHO.complete(ask(Credential(), messages=messages, tools=[WEATHER]))

    assert called.tool_calls == [ToolCall(id="echo-call-0", name="get_weather", arguments={"city": "Oslo"})]
    assert (called.text, called.stop_reason) == ("", "tool_use")
    assert (answered.tool_calls, answered.text) == ([], "echo: Weather? | tool results: 4C")


def test_echo_ignores_a_directive_for_a_tool_the_agent_lacks():
    messages = [Message(role="user", content="Hi [[tool:rm_rf {}]]")]

    result = ECHO.complete(ask(Credential(), messages=messages, tools=[WEATHER]))

    assert (result.tool_calls, result.text, result.stop_reason) == ([], "echo: Hi", "end_turn")
