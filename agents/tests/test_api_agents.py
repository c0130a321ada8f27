"""/api/v1/agents: roles, project isolation, validation across rows, pricing and health checks."""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.tests.factories import ApiKeyFactory
from agents.models import Agent
from projects.tests.factories import MembershipFactory
from sparkops.roles import Role
from sparkops.testing import ROLES, client_for

from .factories import AgentFactory, CredentialFactory, ToolFactory
from .provider_server import ProviderServer

LIST_URL = "/api/v1/agents"
ERROR_KEYS = {"status", "code", "message", "errors"}
WRITERS = [(Role.OWNER, True), (Role.ADMIN, True), (Role.DEVELOPER, True), (Role.VIEWER, False)]


def detail_url(agent, suffix: str = "") -> str:
    return f"{LIST_URL}/{agent.pk}{suffix}"


def assert_error(response, status: int) -> dict:
    body = response.json()
    assert response.status_code == status, body
    assert set(body) == ERROR_KEYS
    return body


def payload(project, **fields) -> dict:
    base = {"project": str(project.pk), "name": "Researcher", "slug": "researcher", "provider": "echo"}
    return base | {"model": "echo-1"} | fields


def create(client, project, **fields):
    return client.post(LIST_URL, payload(project, **fields))


@pytest.fixture
def agent(team):
    return AgentFactory(project=team.project, name="Writer", slug="writer")


@pytest.fixture
def both_projects_developer(team):
    """A developer in the team project who is also a developer in the outsider's project."""
    user = MembershipFactory(project=team.project, role=Role.DEVELOPER).user
    MembershipFactory(project=team.other_project, user=user, role=Role.DEVELOPER)
    return user


@pytest.fixture
def server(settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    fake = ProviderServer().start()
    yield fake
    fake.stop()


# ------------------------------------------------------------------------------
# Roles and isolation
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_every_member_lists_the_projects_agents(team, agent, role):
    AgentFactory(project=team.other_project, name="Hidden")
    response = team.client(role).get(LIST_URL)
    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [str(agent.pk)]


def test_an_outsider_lists_only_their_own_projects_agents(team, agent):
    theirs = AgentFactory(project=team.other_project)
    response = team.client("outsider").get(LIST_URL)
    assert [row["id"] for row in response.json()["results"]] == [str(theirs.pk)]


def test_listing_by_a_project_the_caller_is_not_in_is_404(team, agent):
    assert_error(team.client("developer").get(LIST_URL, {"project": str(team.other_project.pk)}), 404)
    assert_error(team.client("outsider").get(LIST_URL, {"project": str(team.project.pk)}), 404)


@pytest.mark.parametrize("role", ROLES)
def test_every_member_reads_an_agent(team, agent, role):
    response = team.client(role).get(detail_url(agent))
    assert response.status_code == 200
    assert (response.json()["id"], response.json()["slug"]) == (str(agent.pk), "writer")


def test_an_outsider_cannot_read_update_delete_or_check_an_agent(team, agent):
    outsider = team.client("outsider")
    assert_error(outsider.get(detail_url(agent)), 404)
    assert_error(outsider.patch(detail_url(agent), {"name": "Taken"}), 404)
    assert_error(outsider.put(detail_url(agent), payload(team.project, name="Taken")), 404)
    assert_error(outsider.post(detail_url(agent, "/health-check")), 404)
    assert_error(outsider.delete(detail_url(agent)), 404)
    agent.refresh_from_db()
    assert (agent.name, agent.health_status) == ("Writer", "unknown")


def test_unauthenticated_callers_are_refused(team, agent, api_client):
    assert_error(api_client.get(LIST_URL), 401)
    assert_error(create(api_client, team.project), 401)
    assert_error(api_client.delete(detail_url(agent)), 401)
    assert Agent.objects.count() == 1


@pytest.mark.parametrize(("role", "allowed"), WRITERS)
def test_creating_an_agent_needs_the_developer_role(team, role, allowed):
    response = create(team.client(role), team.project)
    if allowed:
        assert response.status_code == 201, response.json()
        created = Agent.objects.get(pk=response.json()["id"])
        assert (created.project, created.slug, created.provider, created.model) == (
            team.project,
            "researcher",
            "echo",
            "echo-1",
        )
    else:
        assert_error(response, 403)
        assert not Agent.objects.exists()


def test_an_outsider_cannot_create_an_agent_in_the_team_project(team):
    body = assert_error(create(team.client("outsider"), team.project), 400)
    assert "does not exist" in body["errors"]["project"][0]
    assert not Agent.objects.exists()


@pytest.mark.parametrize(("role", "allowed"), WRITERS)
def test_updating_an_agent_needs_the_developer_role(team, agent, role, allowed):
    response = team.client(role).patch(detail_url(agent), {"system_prompt": "Be terse."})
    agent.refresh_from_db()
    if allowed:
        assert response.status_code == 200, response.json()
        assert agent.system_prompt == "Be terse."
    else:
        assert_error(response, 403)
        assert agent.system_prompt == ""


def test_a_developer_can_replace_an_agent_with_put(team, agent):
    response = team.client("developer").put(detail_url(agent), payload(team.project, name="Editor", slug="editor"))
    assert response.status_code == 200, response.json()
    agent.refresh_from_db()
    assert (agent.name, agent.slug) == ("Editor", "editor")


def test_an_agent_never_moves_to_another_project(team, agent, both_projects_developer):
    client = client_for(both_projects_developer)
    response = client.patch(detail_url(agent), {"project": str(team.other_project.pk), "name": "Moved"})
    assert response.status_code == 200, response.json()
    agent.refresh_from_db()
    assert (agent.project, agent.name) == (team.project, "Moved")


@pytest.mark.parametrize(("role", "allowed"), WRITERS)
def test_deleting_an_agent_needs_the_developer_role(team, agent, role, allowed):
    response = team.client(role).delete(detail_url(agent))
    if allowed:
        assert response.status_code == 204
        assert not Agent.objects.filter(pk=agent.pk).exists()
    else:
        assert_error(response, 403)
        assert Agent.objects.filter(pk=agent.pk).exists()


@pytest.mark.parametrize(("role", "allowed"), WRITERS)
def test_health_checking_an_agent_needs_the_developer_role(team, agent, role, allowed):
    response = team.client(role).post(detail_url(agent, "/health-check"))
    agent.refresh_from_db()
    if allowed:
        assert response.status_code == 200, response.json()
        assert agent.health_status == "healthy"
    else:
        assert_error(response, 403)
        assert (agent.health_status, agent.health_checked_at) == ("unknown", None)


@pytest.mark.parametrize(("key_role", "status"), [(Role.DEVELOPER, 201), (Role.VIEWER, 403)])
def test_an_api_key_creates_agents_only_with_the_developer_role(team, key_role, status):
    key = ApiKeyFactory(project=team.project, created_by=team.members[Role.OWNER], role=key_role)
    response = create(client_for(api_key=key.raw), team.project)
    assert response.status_code == status, response.json()
    assert Agent.objects.filter(project=team.project).count() == (1 if status == 201 else 0)


def test_a_missing_agent_is_404(team):
    assert_error(team.client("owner").get(f"{LIST_URL}/{uuid.uuid4()}"), 404)


# ------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"temperature": 2.5}, "temperature: must be between 0 and 2."),
        ({"temperature": -0.1}, "temperature: must be between 0 and 2."),
        ({"temperature": "hot"}, "temperature: must be a number."),
        ({"top_k": 5}, "top_k: unknown parameter"),
        ({"max_tokens": 10.5}, "max_tokens: must be an integer."),
        ({"max_tokens": True}, "max_tokens: must be an integer."),
        ({"max_tokens": 0}, "max_tokens: must be between 1 and 1000000."),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop: a list of at most 4 strings."),
        ({"stop": [1]}, "stop: a list of at most 4 strings."),
    ],
)
def test_it_refuses_bad_parameters_with_a_message_per_field(team, parameters, message):
    body = assert_error(create(team.client("developer"), team.project, parameters=parameters), 400)
    assert set(body["errors"]) == {"parameters"}
    assert body["errors"]["parameters"][0].startswith(message)
    assert not Agent.objects.exists()


def test_it_reports_every_bad_parameter_at_once(team):
    parameters = {"temperature": 3, "max_tokens": "many", "frobnicate": 1}
    body = assert_error(create(team.client("developer"), team.project, parameters=parameters), 400)
    assert len(body["errors"]["parameters"]) == 3


def test_good_parameters_are_stored(team):
    parameters = {"temperature": 0.2, "top_p": 1, "max_tokens": 512, "stop": ["\n\n"], "seed": 7}
    response = create(team.client("developer"), team.project, parameters=parameters)
    assert response.status_code == 201, response.json()
    assert Agent.objects.get().parameters == parameters


def test_parameters_that_are_not_an_object_are_refused(team):
    body = assert_error(create(team.client("developer"), team.project, parameters=[1, 2]), 400)
    assert body["errors"]["parameters"] == ["Parameters must be an object."]


def test_a_bad_parameter_in_an_update_leaves_the_agent_unchanged(team, agent):
    response = team.client("developer").patch(detail_url(agent), {"parameters": {"temperature": 9}, "name": "X"})
    assert_error(response, 400)
    agent.refresh_from_db()
    assert (agent.name, agent.parameters) == ("Writer", {})


def test_an_unknown_provider_is_refused(team):
    body = assert_error(create(team.client("developer"), team.project, provider="skynet"), 400)
    assert "provider" in body["errors"]
    assert not Agent.objects.exists()


def test_the_slug_is_unique_in_a_project(team, agent):
    body = assert_error(create(team.client("developer"), team.project, slug="writer"), 400)
    assert "already exists" in body["message"]
    assert Agent.objects.filter(slug="writer").count() == 1


def test_the_same_slug_may_be_used_in_another_project(team, agent):
    response = create(team.client("outsider"), team.other_project, slug="writer")
    assert response.status_code == 201, response.json()
    assert set(Agent.objects.filter(slug="writer").values_list("project", flat=True)) == {
        team.project.pk,
        team.other_project.pk,
    }


def test_tools_and_a_credential_of_the_project_are_attached(team):
    tools = [ToolFactory(project=team.project), ToolFactory(project=team.project)]
    credential = CredentialFactory(project=team.project, provider="echo")
    response = create(
        team.client("developer"), team.project, tools=[str(t.pk) for t in tools], credential=str(credential.pk)
    )
    assert response.status_code == 201, response.json()
    created = Agent.objects.get()
    assert set(created.tools.all()) == set(tools)
    assert created.credential == credential
    assert set(response.json()["tools"]) == {str(t.pk) for t in tools}


def test_updating_tools_replaces_them_and_omitting_tools_keeps_them(team, agent):
    first, second = ToolFactory(project=team.project), ToolFactory(project=team.project)
    agent.tools.set([first])
    client = team.client("developer")

    client.patch(detail_url(agent), {"description": "Kept tools"})
    assert list(agent.tools.all()) == [first]

    response = client.patch(detail_url(agent), {"tools": [str(second.pk)]})
    assert response.status_code == 200, response.json()
    assert list(agent.tools.all()) == [second]


def test_a_tool_of_a_project_the_caller_is_not_in_does_not_exist(team):
    foreign = ToolFactory(project=team.other_project)
    body = assert_error(create(team.client("developer"), team.project, tools=[str(foreign.pk)]), 400)
    assert "does not exist" in body["errors"]["tools"][0]
    assert not Agent.objects.exists()


def test_a_credential_of_a_project_the_caller_is_not_in_does_not_exist(team):
    foreign = CredentialFactory(project=team.other_project, provider="echo")
    body = assert_error(create(team.client("developer"), team.project, credential=str(foreign.pk)), 400)
    assert "does not exist" in body["errors"]["credential"][0]
    assert not Agent.objects.exists()


def test_a_tool_or_credential_of_the_callers_other_project_is_refused(team, both_projects_developer):
    tool = ToolFactory(project=team.other_project, slug="elsewhere")
    credential = CredentialFactory(project=team.other_project, provider="echo")
    client = client_for(both_projects_developer)

    body = assert_error(create(client, team.project, tools=[str(tool.pk)], credential=str(credential.pk)), 400)

    assert body["errors"]["tools"] == ["Tools of another project: elsewhere."]
    assert body["errors"]["credential"] == ["The credential belongs to another project."]
    assert not Agent.objects.exists()


def test_a_credential_for_another_provider_is_refused(team):
    credential = CredentialFactory(project=team.project, provider="anthropic")
    body = assert_error(create(team.client("developer"), team.project, credential=str(credential.pk)), 400)
    assert body["errors"]["credential"] == ["The credential is for anthropic, not echo."]
    assert not Agent.objects.exists()


# ------------------------------------------------------------------------------
# Pricing
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(("model", "priced"), [("echo-1", True), ("echo-unpriced", False)])
def test_is_priced_says_whether_the_model_has_a_price_on_list_and_detail(team, model, priced):
    agent = AgentFactory(project=team.project, model=model)
    client = team.client("viewer")
    assert [row["is_priced"] for row in client.get(LIST_URL).json()["results"]] == [priced]
    assert client.get(detail_url(agent)).json()["is_priced"] is priced


def test_is_priced_is_answered_on_create_and_follows_a_model_change(team):
    client = team.client("developer")
    created = create(client, team.project).json()
    assert created["is_priced"] is True

    updated = client.patch(f"{LIST_URL}/{created['id']}", {"model": "echo-unpriced"}).json()
    assert (updated["model"], updated["is_priced"]) == ("echo-unpriced", False)


# ------------------------------------------------------------------------------
# Health checks
# ------------------------------------------------------------------------------
def test_health_check_of_an_echo_agent_is_healthy_and_stored(team, agent):
    response = team.client("developer").post(detail_url(agent, "/health-check"))

    assert response.status_code == 200, response.json()
    body = response.json()
    agent.refresh_from_db()
    assert (agent.health_status, agent.health_error) == ("healthy", "")
    assert agent.health_checked_at is not None
    assert agent.health_latency_ms is not None
    assert (body["status"], body["error"], body["latency_ms"]) == ("healthy", "", agent.health_latency_ms)
    assert team.client("viewer").get(detail_url(agent)).json()["health"]["status"] == "healthy"


def openai_agent(team, base_url: str) -> Agent:
    credential = CredentialFactory(project=team.project, provider="openai", base_url=base_url, secret="sk-local")
    return AgentFactory(project=team.project, provider="openai", model="gpt-4o-mini", credential=credential)


def test_health_check_of_a_loopback_base_url_is_unhealthy_when_not_allowed(team, server, settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = []
    agent = openai_agent(team, server.url)

    response = team.client("developer").post(detail_url(agent, "/health-check"))

    assert response.status_code == 200, response.json()
    agent.refresh_from_db()
    assert agent.health_status == "unhealthy"
    assert "Refusing" in agent.health_error
    assert agent.health_checked_at is not None
    assert (response.json()["status"], response.json()["error"]) == ("unhealthy", agent.health_error)
    assert server.requests == []


def test_health_check_against_an_allowed_server_is_healthy_with_latency(team, server):
    server.reply({"data": [{"id": "gpt-4o-mini"}]})
    agent = openai_agent(team, server.url)

    response = team.client("developer").post(detail_url(agent, "/health-check"))

    assert response.json()["status"] == "healthy", response.json()
    agent.refresh_from_db()
    assert (agent.health_status, agent.health_error) == ("healthy", "")
    assert agent.health_latency_ms > 0
    sent = server.requests[0]
    assert (sent.method, sent.path, sent.headers["authorization"]) == ("GET", "/models", "Bearer sk-local")


def test_health_check_records_a_provider_failure(team, server):
    server.reply({"error": {"message": "bad key"}}, status=401)
    agent = openai_agent(team, server.url)

    team.client("developer").post(detail_url(agent, "/health-check"))

    agent.refresh_from_db()
    assert agent.health_status == "unhealthy"
    assert "401" in agent.health_error


# ------------------------------------------------------------------------------
# Query count
# ------------------------------------------------------------------------------
def list_queries(client, count: int, team) -> int:
    tools = ToolFactory.create_batch(3, project=team.project)
    credential = CredentialFactory(project=team.project, provider="echo")
    for _ in range(count - Agent.objects.count()):
        AgentFactory(project=team.project, tools=tools, credential=credential)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(LIST_URL)
    assert response.json()["count"] == count
    assert all(len(row["tools"]) == 3 for row in response.json()["results"])
    return len(queries)


def test_the_list_query_count_is_bounded_and_does_not_grow_with_rows(team, django_assert_max_num_queries):
    client = team.client("viewer")
    few = list_queries(client, 5, team)
    many = list_queries(client, 25, team)
    assert few == many
    with django_assert_max_num_queries(6):
        client.get(LIST_URL)
