"""Tool executors: the built-in functions, and HTTP tools against a real local server."""

import json
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import tools
from agents.tools import ToolError

from .provider_server import ProviderServer

BUILTIN = tools.get("builtin")
HTTP = tools.get("http")


def call(function: str, **arguments):
    return BUILTIN.execute(config={"function": function}, arguments=arguments).output


def failure(function: str, **arguments) -> ToolError:
    with pytest.raises(ToolError) as excinfo:
        call(function, **arguments)
    assert excinfo.value.permanent
    return excinfo.value


def test_an_unknown_kind_is_a_permanent_error():
    with pytest.raises(ToolError) as excinfo:
        tools.get("shell")
    assert excinfo.value.permanent


# ------------------------------------------------------------------------------
# json_extract
# ------------------------------------------------------------------------------
DATA = {"items": [{"name": "first", "tags": ["a", "b"]}, {"name": "second"}], "total": 2}


@pytest.mark.parametrize(
    ("path", "expected"),
    [("total", 2), ("items.1.name", "second"), ("items.0.tags.1", "b"), ("items.0", DATA["items"][0]), ("", DATA)],
)
def test_json_extract_follows_dict_keys_and_list_indexes(path, expected):
    assert call("json_extract", data=DATA, path=path) == expected


@pytest.mark.parametrize("path", ["missing", "items.5", "items.first", "total.x", "items.0.name.0.x"])
def test_json_extract_reports_a_missing_path(path):
    error = failure("json_extract", data=DATA, path=path)
    assert f"Path {path!r} not found" in str(error)


# ------------------------------------------------------------------------------
# template
# ------------------------------------------------------------------------------
def test_template_renders_values():
    rendered = call(
        "template",
        template="Hello {{ name }}: {{ items|join(', ') }} ({{ n * 2 }})",
        values={
            "name": "Ann",
            "items": ["a", "b"],
            "n": 21,
        },
    )
    assert rendered == "Hello Ann: a, b (42)"


def test_template_refuses_a_missing_value():
    assert "'name' is undefined" in str(failure("template", template="Hi {{ name }}"))


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ values.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ ''|attr('__class__') }}",
        "{% set x = [] %}{{ x.append(1) }}",
    ],
)
def test_template_refuses_access_to_python_internals(template):
    error = failure("template", template=template, values={"values": {}})
    assert "Template error" in str(error)


@pytest.mark.parametrize(
    "template",
    [
        "{{ 9 ** (9 ** 9) }}",
        "{{ ((9 ** 99) ** 99) ** 99 }}",
        "{{ 'x' * 10 ** 10 }}",
        "{% set a = 10 ** 100 %}{% set b = a * a %}{% set c = b * b %}{% set d = c * c %}{{ d * d * d }}",
    ],
)
def test_template_refuses_work_that_would_hang_or_exhaust_the_worker(template):
    assert "Template error" in str(failure("template", template=template))


def test_template_syntax_errors_are_permanent():
    assert "Template error" in str(failure("template", template="{{ oops"))


# ------------------------------------------------------------------------------
# arithmetic
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("-2 ** 2", -4),
        ("(-2) ** 2", 4),
        ("2 ** 3 ** 2", 512),
        ("-3 + +5", 2),
        ("7 // 2 + 7 % 2", 4),
        ("1 / 4", 0.25),
        ("2 ** -1", 0.5),
        ("10 ** 100", 10**100),
        ("1.5e3 - 500", 1000.0),
    ],
)
def test_arithmetic_follows_python_precedence(expression, expected):
    assert call("arithmetic", expression=expression) == expected


@settings(max_examples=60, deadline=None)
@given(
    st.integers(-1000, 1000),
    st.integers(-1000, 1000),
    st.integers(1, 1000),
    st.sampled_from(["+", "-", "*", "//", "%"]),
)
def test_arithmetic_agrees_with_python_on_integers(a, b, c, op):
    expression = f"{a} {op} ({b}) * {c}"
    assert call("arithmetic", expression=expression) == eval(expression)  # noqa: S307 - the oracle


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("__import__('os')", "not Call"),
        ("x + 1", "not Name"),
        ("(1).real", "not Attribute"),
        ("[1, 2]", "not List"),
        ("'a' * 3", "not Constant"),
        ("True + 1", "not Constant"),
        ("1 if 1 else 2", "not IfExp"),
        ("1 < 2", "not Compare"),
        ("1 << 2", "not BinOp"),
        ("lambda: 1", "not Lambda"),
        ("1 +", "Not an arithmetic expression"),
        ("1 / 0", "division by zero"),
        ("2 ** 101", "Exponents above 100"),
        ("9 ** 9 ** 9", "Exponents above 100"),
        ("((((9 ** 99) ** 99) ** 99) ** 99)", "too large"),
        ("1e308 * 10", "not a finite real number"),
        ("(-8) ** 0.5", "not a finite real number"),
        ("2.0 ** 100 ** 1.5", "Exponents above 100"),
    ],
)
def test_arithmetic_refuses_anything_but_bounded_arithmetic(expression, problem):
    assert problem in str(failure("arithmetic", expression=expression))


def test_arithmetic_refuses_input_its_function_cannot_read():
    assert "'expression' is a required property" in str(failure("arithmetic"))
    assert "is not of type 'string'" in str(failure("arithmetic", expression=42))


# ------------------------------------------------------------------------------
# HTTP executor
# ------------------------------------------------------------------------------
@pytest.fixture
def server(settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    fake = ProviderServer().start()
    yield fake
    fake.stop()


def execute(server, url: str, arguments: dict, *, secret: str = "", **config):
    return HTTP.execute(config={"url": server.url + url, **config}, arguments=arguments, secret=secret)


def http_failure(server, url: str, arguments: dict | None = None, **config) -> ToolError:
    with pytest.raises(ToolError) as excinfo:
        execute(server, url, arguments or {}, **config)
    return excinfo.value


def test_get_fills_the_url_template_and_sends_the_other_arguments_as_query(server):
    server.reply({"ok": True})

    result = execute(server, "/tickets/{{ id }}", {"id": 42, "status": "open", "limit": 5})

    assert result.output == {"ok": True}
    sent = urlsplit(server.requests[0].path)
    assert (server.requests[0].method, sent.path) == ("GET", "/tickets/42")
    assert parse_qs(sent.query) == {"status": ["open"], "limit": ["5"]}
    assert server.requests[0].body == b""


@pytest.mark.parametrize("value", ["../../admin", "x/../../admin", "@evil.example.com", "a?b=1#frag", "a b"])
def test_an_argument_in_the_url_path_is_percent_encoded(server, value):
    server.reply({"ok": True})

    execute(server, "/users/{{ name }}/profile", {"name": value})

    path = server.requests[0].path
    assert path.startswith("/users/")
    assert path.endswith("/profile")
    assert path.count("/") == 3  # no segment added or removed
    assert "@" not in path
    assert "?" not in path


def test_an_argument_next_to_the_host_cannot_change_it_and_fails_cleanly(server):
    config = {"url": server.url + "{{ suffix }}/items"}  # "host:port@elsewhere" once rendered, unencoded

    with pytest.raises(ToolError) as excinfo:
        HTTP.execute(config=config, arguments={"suffix": "@169.254.169.254"}, secret="")

    assert excinfo.value.permanent
    assert "Invalid URL" in str(excinfo.value)
    assert server.requests == []


def test_post_sends_the_arguments_as_json(server):
    server.reply({"created": 1}, status=201)

    result = execute(server, "/tickets", {"title": "Refund", "tags": ["billing"]}, method="post")

    sent = server.requests[0]
    assert (sent.method, sent.path, sent.headers["content-type"]) == ("POST", "/tickets", "application/json")
    assert sent.json() == {"title": "Refund", "tags": ["billing"]}
    assert result.output == {"created": 1}


def test_header_templates_receive_the_decrypted_secret_and_arguments(server):
    server.reply({})
    headers = {"Authorization": "Bearer {{ credential }}", "X-Tenant": "{{ tenant }}"}

    execute(server, "/me", {"tenant": "acme"}, secret="sk-secret", headers=headers)

    sent = server.requests[0].headers
    assert (sent["authorization"], sent["x-tenant"]) == ("Bearer sk-secret", "acme")
    assert "sk-secret" not in server.requests[0].path


def test_the_secret_is_not_available_to_the_url(server):
    error = http_failure(server, "/{{ credential }}")
    assert error.permanent
    assert "'credential' is undefined" in str(error)
    assert server.requests == []


def test_a_rate_limit_is_transient_with_retry_after(server):
    server.reply({"error": "slow down"}, status=429, headers={"Retry-After": "7"})
    error = http_failure(server, "/x")
    assert (error.permanent, error.retry_after) == (False, 7.0)
    assert "429" in str(error)


@pytest.mark.parametrize(("status", "permanent"), [(500, False), (503, False), (408, False), (404, True), (400, True)])
def test_error_statuses_map_to_transient_or_permanent(server, status, permanent):
    server.reply({"error": "nope"}, status=status)
    error = http_failure(server, "/x")
    assert (error.permanent, error.retry_after) == (permanent, None)
    assert str(status) in str(error)


def test_a_json_response_is_decoded(server):
    server.reply({"items": [1, 2]}, headers={"Content-Type": "application/json; charset=utf-8"})
    assert execute(server, "/x", {}).output == {"items": [1, 2]}


def test_a_text_response_is_returned_as_text(server):
    server.reply(body=b"plain words", headers={"Content-Type": "text/plain"})
    assert execute(server, "/x", {}).output == "plain words"


def test_a_response_claiming_json_but_not_json_is_returned_as_text(server):
    server.reply(body=b"{broken", headers={"Content-Type": "application/json"})
    assert execute(server, "/x", {}).output == "{broken"


def test_a_timeout_is_transient(server):
    server.reply({}, delay=5)
    error = http_failure(server, "/slow", timeout=0.2)
    assert not error.permanent
    assert "Timed out" in str(error)


def test_a_loopback_url_is_refused_permanently_when_not_allowed(server, settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = []
    error = http_failure(server, "/x")
    assert error.permanent
    assert server.requests == []


def test_the_result_carries_the_latency(server):
    server.reply(json.loads('{"a": 1}'))
    assert execute(server, "/x", {}).latency_ms > 0


# ------------------------------------------------------------------------------
# HTTP config validation
# ------------------------------------------------------------------------------
def test_a_minimal_http_config_is_valid():
    assert HTTP.validate_config({"url": "https://api.example.com/{{ q }}"}) == {}


def test_every_problem_in_an_http_config_is_reported():
    config = {"method": "BREW", "url": "ftp://x", "headers": ["a"], "timeout": -1}
    assert set(HTTP.validate_config(config)) == {"method", "url", "headers", "timeout"}


def test_every_call_carries_the_idempotency_key_it_is_given(server):
    server.reply({"ok": True})
    limits = tools.CallLimits(idempotency_key="run-1:notify:1:1:abc")
    HTTP.execute(config={"method": "POST", "url": server.url + "/n"}, arguments={"a": 1}, limits=limits)
    assert server.requests[0].headers["idempotency-key"] == "run-1:notify:1:1:abc"


def test_a_tool_that_sets_its_own_idempotency_key_keeps_it(server):
    server.reply({"ok": True})
    config = {"method": "POST", "url": server.url + "/n", "headers": {"idempotency-key": "{{ ref }}"}}
    HTTP.execute(config=config, arguments={"ref": "order-7"}, limits=tools.CallLimits(idempotency_key="ours"))
    assert server.requests[0].headers["idempotency-key"] == "order-7"


def test_the_callers_time_limit_cuts_a_longer_tool_timeout(server):
    server.reply({}, delay=5)
    started = time.monotonic()
    with pytest.raises(ToolError) as excinfo:
        HTTP.execute(config={"url": server.url + "/slow", "timeout": 30}, arguments={}, limits=tools.CallLimits(0.3))
    assert time.monotonic() - started < 2
    assert excinfo.value.timed_out
    assert not excinfo.value.permanent


def test_a_template_looping_for_hours_is_cut_at_the_callers_time_limit():
    template = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(ToolError) as excinfo:
        BUILTIN.execute(config={"function": "template"}, arguments={"template": template}, limits=tools.CallLimits(0.3))
    assert time.monotonic() - started < 2
    assert excinfo.value.timed_out
    assert call("arithmetic", expression="6*7") == 42  # the alarm is gone: nothing else is cut
