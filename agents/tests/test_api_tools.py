"""/api/v1/tools: roles, project isolation, config and schema validation, and test runs."""

import pytest

from accounts.tests.factories import ApiKeyFactory
from agents.models import Tool
from agents.tools.builtin import BUILTINS
from sparkops.roles import Role
from sparkops.testing import ROLES, client_for

from .factories import CredentialFactory, HttpToolFactory, ToolFactory
from .provider_server import ProviderServer

LIST_URL = "/api/v1/tools"
ERROR_KEYS = {"status", "code", "message", "errors"}
WRITERS = [(Role.OWNER, True), (Role.ADMIN, True), (Role.DEVELOPER, True), (Role.VIEWER, False)]
HTTP_CONFIG = {"method": "GET", "url": "https://api.example.com/tickets/{{ id }}", "timeout": 5}


def detail_url(tool, suffix: str = "") -> str:
    return f"{LIST_URL}/{tool.pk}{suffix}"


def assert_error(response, status: int) -> dict:
    body = response.json()
    assert response.status_code == status, body
    assert set(body) == ERROR_KEYS
    return body


def create(client, project, **fields):
    data = {"project": str(project.pk), "name": "Search", "slug": "search", "kind": "http", "config": HTTP_CONFIG}
    return client.post(LIST_URL, data | fields)


def run(client, tool, arguments):
    return client.post(detail_url(tool, "/test"), {"input": arguments})


@pytest.fixture
def tool(team):
    return ToolFactory(project=team.project, name="Calculator", slug="calculator")


# ------------------------------------------------------------------------------
# Roles and isolation
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_every_member_lists_and_reads_the_projects_tools(team, tool, role):
    ToolFactory(project=team.other_project)
    client = team.client(role)
    assert [row["id"] for row in client.get(LIST_URL).json()["results"]] == [str(tool.pk)]
    assert client.get(detail_url(tool)).json()["slug"] == "calculator"


def test_an_outsider_cannot_reach_a_tool(team, tool):
    outsider = team.client("outsider")
    assert outsider.get(LIST_URL).json()["results"] == []
    assert_error(outsider.get(LIST_URL, {"project": str(team.project.pk)}), 404)
    assert_error(outsider.get(detail_url(tool)), 404)
    assert_error(outsider.patch(detail_url(tool), {"enabled": False}), 404)
    assert_error(run(outsider, tool, {"expression": "1+1"}), 404)
    assert_error(outsider.delete(detail_url(tool)), 404)
    assert Tool.objects.get(pk=tool.pk).enabled


def test_a_member_listing_another_project_gets_404(team, tool):
    assert_error(team.client("developer").get(LIST_URL, {"project": str(team.other_project.pk)}), 404)


def test_an_outsider_cannot_create_a_tool_in_the_team_project(team):
    body = assert_error(create(team.client("outsider"), team.project), 400)
    assert "does not exist" in body["errors"]["project"][0]
    assert not Tool.objects.exists()


def test_unauthenticated_callers_are_refused(team, tool, api_client):
    assert_error(api_client.get(LIST_URL), 401)
    assert_error(create(api_client, team.project), 401)
    assert_error(run(api_client, tool, {"expression": "1"}), 401)
    assert Tool.objects.count() == 1


@pytest.mark.parametrize(("role", "allowed"), WRITERS)
def test_creating_a_tool_needs_the_developer_role(team, role, allowed):
    response = create(team.client(role), team.project)
    if allowed:
        assert response.status_code == 201, response.json()
        created = Tool.objects.get()
        assert (created.project, created.kind, created.config) == (team.project, "http", HTTP_CONFIG)
    else:
        assert_error(response, 403)
        assert not Tool.objects.exists()


@pytest.mark.parametrize(("role", "allowed"), WRITERS)
def test_updating_a_tool_needs_the_developer_role(team, tool, role, allowed):
    response = team.client(role).patch(detail_url(tool), {"requires_approval": True, "risk_class": "write"})
    if allowed:
        assert response.status_code == 200, response.json()
        assert Tool.objects.values_list("requires_approval", "risk_class").get() == (True, "write")
    else:
        assert_error(response, 403)
        assert Tool.objects.values_list("requires_approval", "risk_class").get() == (False, "read")


@pytest.mark.parametrize(("role", "allowed"), WRITERS)
def test_deleting_a_tool_needs_the_developer_role(team, tool, role, allowed):
    response = team.client(role).delete(detail_url(tool))
    assert response.status_code == (204 if allowed else 403)
    assert Tool.objects.exists() is not allowed


@pytest.mark.parametrize(("role", "allowed"), WRITERS)
def test_test_running_a_tool_needs_the_developer_role(team, tool, role, allowed):
    response = run(team.client(role), tool, {"expression": "1+1"})
    if allowed:
        assert response.json()["ok"] is True
    else:
        assert_error(response, 403)


# ------------------------------------------------------------------------------
# Labels policies key on (slug, risk class, approval flag) are an admin's
# ------------------------------------------------------------------------------
LABELLERS = [(Role.OWNER, True), (Role.ADMIN, True), (Role.DEVELOPER, False)]


def labels(tool) -> tuple:
    return Tool.objects.values_list("slug", "risk_class", "requires_approval").get(pk=tool.pk)


@pytest.fixture
def guarded(team):
    """A tool an admin classed write and flagged: every call waits for approval."""
    return ToolFactory(project=team.project, slug="deploy", risk_class="write", requires_approval=True)


@pytest.mark.parametrize(("role", "allowed"), LABELLERS)
def test_only_admins_lower_a_tools_risk_class_or_turn_its_approval_off(team, guarded, role, allowed):
    response = team.client(role).patch(detail_url(guarded), {"risk_class": "read", "requires_approval": False})
    if allowed:
        assert response.status_code == 200, response.json()
        assert labels(guarded) == ("deploy", "read", False)
    else:
        body = assert_error(response, 403)
        assert body["code"] == "permission_denied"
        assert body["errors"] == {
            "risk_class": [
                "Only admins and owners lower a tool's risk class (approval policies act on it); "
                "yours may be write or above."
            ],
            "requires_approval": ["Only admins and owners turn a tool's approval off."],
        }
        assert labels(guarded) == ("deploy", "write", True)


@pytest.mark.parametrize(("role", "allowed"), LABELLERS)
def test_only_admins_rename_a_tool(team, guarded, role, allowed):
    response = team.client(role).patch(detail_url(guarded), {"slug": "harmless"})
    if allowed:
        assert response.status_code == 200, response.json()
        assert labels(guarded)[0] == "harmless"
    else:
        body = assert_error(response, 403)
        assert body["errors"] == {"slug": ["Only admins and owners rename a tool: policies name tools by slug."]}
        assert labels(guarded)[0] == "deploy"


def test_a_developer_may_make_a_tool_stricter_and_resend_its_labels_unchanged(team, guarded):
    client = team.client("developer")
    current = client.get(detail_url(guarded)).json()
    assert client.put(detail_url(guarded), current | {"name": "Deploy!"}).status_code == 200
    assert client.patch(detail_url(guarded), {"risk_class": "destructive"}).status_code == 200
    assert labels(guarded) == ("deploy", "destructive", True)


def test_a_tool_a_developer_creates_starts_unclassed_until_an_admin_classes_it(team):
    assert create(team.client("developer"), team.project).json()["risk_class"] == "spends_money"
    tool = Tool.objects.get()
    assert team.client("developer").patch(detail_url(tool), {"risk_class": "read"}).status_code == 403
    assert team.client("admin").patch(detail_url(tool), {"risk_class": "read"}).status_code == 200
    assert labels(tool)[1] == "read"


@pytest.mark.parametrize(("role", "allowed"), LABELLERS)
def test_only_admins_create_a_tool_classed_below_unclassed(team, role, allowed):
    response = create(team.client(role), team.project, risk_class="read")
    if allowed:
        assert response.status_code == 201, response.json()
        assert Tool.objects.get().risk_class == "read"
    else:
        assert list(assert_error(response, 403)["errors"]) == ["risk_class"]
        assert not Tool.objects.exists()


@pytest.mark.parametrize(("role", "kept"), LABELLERS)
def test_a_developer_changing_what_a_tool_does_makes_it_unclassed_again(team, role, kept):
    tool = HttpToolFactory(project=team.project, slug="lookup", risk_class="read")
    elsewhere = {"method": "POST", "url": "https://api.example.com/deploy", "timeout": 5}

    response = team.client(role).patch(detail_url(tool), {"config": elsewhere})

    assert response.status_code == 200, response.json()
    assert labels(tool)[1] == ("read" if kept else "spends_money")


def test_a_developer_api_key_is_held_to_the_developer_rule(team, guarded):
    key = ApiKeyFactory(project=team.project, created_by=team.members[Role.OWNER], role=Role.DEVELOPER)
    response = client_for(api_key=key.raw).patch(detail_url(guarded), {"requires_approval": False})
    assert_error(response, 403)
    assert labels(guarded)[2] is True


def test_a_credential_of_a_project_the_caller_is_not_in_does_not_exist(team):
    foreign = CredentialFactory(project=team.other_project)
    body = assert_error(create(team.client("developer"), team.project, credential=str(foreign.pk)), 400)
    assert "does not exist" in body["errors"]["credential"][0]
    assert not Tool.objects.exists()


def test_the_slug_is_unique_in_a_project_but_not_across_projects(team, tool):
    assert_error(create(team.client("developer"), team.project, slug="calculator"), 400)
    assert create(team.client("outsider"), team.other_project, slug="calculator").status_code == 201
    assert Tool.objects.filter(slug="calculator").count() == 2


# ------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("schema", [{"type": "frog"}, {"type": "object", "required": "q"}, [1, 2]])
def test_the_input_schema_must_be_a_valid_json_schema(team, schema):
    body = assert_error(create(team.client("developer"), team.project, input_schema=schema), 400)
    assert set(body["errors"]) == {"input_schema"}
    assert not Tool.objects.exists()


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({**HTTP_CONFIG, "method": "TRACE"}, "method"),
        ({"method": "GET"}, "url"),
        ({**HTTP_CONFIG, "url": "ftp://files.example.com/{{ id }}"}, "url"),
        ({**HTTP_CONFIG, "url": "file:///etc/passwd"}, "url"),
        ({**HTTP_CONFIG, "url": "https://api.example.com/{{ id "}, "url"),
        ({**HTTP_CONFIG, "timeout": 0}, "timeout"),
        ({**HTTP_CONFIG, "timeout": 121}, "timeout"),
        ({**HTTP_CONFIG, "timeout": "10"}, "timeout"),
        ({**HTTP_CONFIG, "headers": {"X-Count": 3}}, "headers"),
        ({**HTTP_CONFIG, "headers": {"Authorization": "Bearer {{ credential "}}, "headers"),
    ],
)
def test_a_bad_http_config_is_refused_per_field(team, config, field):
    body = assert_error(create(team.client("developer"), team.project, config=config), 400)
    assert set(body["errors"]) == {"config"}
    assert [m.split(":")[0] for m in body["errors"]["config"]] == [field]
    assert not Tool.objects.exists()


def test_a_builtin_with_an_unknown_function_is_refused(team):
    body = assert_error(
        create(team.client("developer"), team.project, kind="builtin", config={"function": "eval"}), 400
    )
    assert body["errors"]["config"][0].startswith("function: Unknown built-in 'eval'")
    assert not Tool.objects.exists()


def test_a_builtin_config_that_is_not_an_object_is_refused(team):
    body = assert_error(create(team.client("developer"), team.project, kind="builtin", config=["arithmetic"]), 400)
    assert "config" in body["errors"]


def test_an_unknown_kind_is_refused(team):
    assert "kind" in assert_error(create(team.client("developer"), team.project, kind="shell"), 400)["errors"]


def test_a_builtin_gets_its_default_input_schema_when_none_is_given(team):
    response = create(team.client("developer"), team.project, kind="builtin", config={"function": "json_extract"})
    assert response.status_code == 201, response.json()
    expected = BUILTINS["json_extract"].input_schema
    assert response.json()["input_schema"] == expected
    assert Tool.objects.get().input_schema == expected


def test_an_update_with_a_bad_config_leaves_the_tool_unchanged(team):
    tool = HttpToolFactory(project=team.project, config=HTTP_CONFIG)
    assert_error(team.client("developer").patch(detail_url(tool), {"config": {"url": "gopher://x"}}), 400)
    assert Tool.objects.get().config == HTTP_CONFIG


# ------------------------------------------------------------------------------
# Test runs
# ------------------------------------------------------------------------------
def test_a_test_run_returns_the_output(team, tool):
    response = run(team.client("developer"), tool, {"expression": "2 + 3 * 4"})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["ok"], body["output"]) == (True, 14)
    assert body["latency_ms"] >= 0


def test_a_test_run_checks_the_input_against_the_schema(team, tool):
    body = assert_error(run(team.client("developer"), tool, {"expression": 7}), 400)
    assert body["errors"]["input"] == ["expression: 7 is not of type 'string'"]


def test_a_test_run_needs_an_input(team, tool):
    assert "input" in assert_error(team.client("developer").post(detail_url(tool, "/test"), {}), 400)["errors"]


@pytest.mark.parametrize("expression", ["1/0", "__import__('os')", "2**1000", "((9**99)**99)**99", "1e308*10"])
def test_a_failing_builtin_reports_a_permanent_failure(team, tool, expression):
    response = run(team.client("developer"), tool, {"expression": expression})
    assert response.status_code == 200
    body = response.json()
    assert (body["ok"], body["permanent"]) == (False, True)
    assert body["error"]


def test_a_disabled_tool_does_not_run(team):
    tool = ToolFactory(project=team.project, enabled=False)
    body = run(team.client("developer"), tool, {"expression": "1+1"}).json()
    assert (body["ok"], body["permanent"]) == (False, True)
    assert "disabled" in body["error"]


def test_a_test_run_of_an_http_tool_calls_the_endpoint_with_the_secret(team, settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    server = ProviderServer().start()
    try:
        server.reply({"id": 7, "title": "Refund"})
        credential = CredentialFactory(project=team.project, secret="tok-123")
        config = {"url": server.url + "/tickets/{{ id }}", "headers": {"Authorization": "Token {{ credential }}"}}
        tool = HttpToolFactory(project=team.project, config=config, credential=credential)

        body = run(team.client("developer"), tool, {"id": 7}).json()
    finally:
        server.stop()

    assert (body["ok"], body["output"]) == (True, {"id": 7, "title": "Refund"})
    assert (server.requests[0].path, server.requests[0].headers["authorization"]) == ("/tickets/7", "Token tok-123")
    assert "tok-123" not in str(body)


def test_a_test_run_of_an_http_tool_to_a_blocked_address_fails_permanently(team, settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = []
    tool = HttpToolFactory(project=team.project, config={"url": "http://169.254.169.254/latest/meta-data"})
    body = run(team.client("developer"), tool, {}).json()
    assert (body["ok"], body["permanent"]) == (False, True)
    assert "Refusing" in body["error"]
