"""One test per filter: each narrows the list it is given, and each is reachable through the API."""

from datetime import timedelta

import pytest
from django.utils import timezone

from agents.filtersets import AgentFilterSet, CredentialFilterSet, ModelPriceFilterSet, ToolFilterSet
from agents.models import Agent, ModelPrice, ProviderCredential, Tool
from projects.tests.factories import MembershipFactory, ProjectFactory
from sparkops.roles import Role
from sparkops.testing import client_for

from .factories import AgentFactory, CredentialFactory, HttpToolFactory, ModelPriceFactory, ToolFactory

pytestmark = pytest.mark.django_db


def filtered(filterset_class, queryset, **params) -> list:
    filterset = filterset_class(params, queryset=queryset)
    assert filterset.is_valid(), filterset.errors
    return list(filterset.qs)


def listed(client, url: str, key: str = "slug", **params) -> list:
    response = client.get(url, params)
    assert response.status_code == 200, response.json()
    return sorted(row[key] for row in response.json()["results"])


@pytest.fixture
def projects():
    """Two projects, both with the same member (returned third), so ?project= has a choice."""
    alpha, beta = ProjectFactory(slug="alpha"), ProjectFactory(slug="beta")
    user = MembershipFactory(project=alpha, role=Role.OWNER).user
    MembershipFactory(project=beta, user=user, role=Role.OWNER)
    return alpha, beta, client_for(user)


# ------------------------------------------------------------------------------
# AgentFilterSet
# ------------------------------------------------------------------------------
AGENTS = "/api/v1/agents"


@pytest.fixture
def agents(projects):
    alpha, beta, client = projects
    search = ToolFactory(project=alpha, slug="search")
    AgentFactory(project=alpha, slug="researcher", tools=[search])
    AgentFactory(project=alpha, slug="writer", provider="openai", model="gpt-4o-mini", status="disabled")
    AgentFactory(project=beta, slug="critic", provider="anthropic", model="claude-haiku-4-5")
    return alpha, search, client


def names_of(rows) -> list[str]:
    return sorted(row.slug for row in rows)


def test_agent_project_filter_narrows_to_that_project(agents):
    alpha, _, client = agents
    assert names_of(filtered(AgentFilterSet, Agent.objects.all(), project=str(alpha.pk))) == ["researcher", "writer"]
    assert listed(client, AGENTS, project=str(alpha.pk)) == ["researcher", "writer"]


def test_agent_status_filter_narrows_to_that_status(agents):
    _, _, client = agents
    assert names_of(filtered(AgentFilterSet, Agent.objects.all(), status="disabled")) == ["writer"]
    assert listed(client, AGENTS, status="active") == ["critic", "researcher"]


def test_agent_provider_filter_narrows_to_that_provider(agents):
    _, _, client = agents
    assert names_of(filtered(AgentFilterSet, Agent.objects.all(), provider="anthropic")) == ["critic"]
    assert listed(client, AGENTS, provider="openai") == ["writer"]


def test_agent_model_filter_narrows_to_that_model(agents):
    _, _, client = agents
    assert names_of(filtered(AgentFilterSet, Agent.objects.all(), model="echo-1")) == ["researcher"]
    assert listed(client, AGENTS, model="claude-haiku-4-5") == ["critic"]


def test_agent_slug_filter_narrows_to_that_agent(agents):
    _, _, client = agents
    assert names_of(filtered(AgentFilterSet, Agent.objects.all(), slug="writer")) == ["writer"]
    assert listed(client, AGENTS, slug="critic") == ["critic"]


def test_agent_tool_filter_narrows_to_agents_that_may_call_it(agents):
    _, search, client = agents
    AgentFactory(project=search.project, slug="second-searcher", tools=[search, ToolFactory(project=search.project)])
    expected = ["researcher", "second-searcher"]
    assert names_of(filtered(AgentFilterSet, Agent.objects.all(), tool=str(search.pk))) == expected
    assert listed(client, AGENTS, tool=str(search.pk)) == expected


def test_agent_status_filter_refuses_an_unknown_status(agents):
    _, _, client = agents
    assert client.get(AGENTS, {"status": "asleep"}).status_code == 400


def test_agent_search_matches_name_role_and_model(agents):
    _, _, client = agents
    assert listed(client, AGENTS, search="haiku") == ["critic"]


# ------------------------------------------------------------------------------
# ToolFilterSet
# ------------------------------------------------------------------------------
TOOLS = "/api/v1/tools"


@pytest.fixture
def tools(projects):
    alpha, beta, client = projects
    ToolFactory(project=alpha, slug="calc")
    HttpToolFactory(project=alpha, slug="refund", risk_class="spends_money", requires_approval=True)
    HttpToolFactory(project=beta, slug="lookup", enabled=False)
    return alpha, client


def tool_slugs(**params) -> list[str]:
    return names_of(filtered(ToolFilterSet, Tool.objects.all(), **params))


def test_tool_project_filter_narrows_to_that_project(tools):
    alpha, client = tools
    assert tool_slugs(project=str(alpha.pk)) == ["calc", "refund"]
    assert listed(client, TOOLS, project=str(alpha.pk)) == ["calc", "refund"]


def test_tool_kind_filter_narrows_to_that_kind(tools):
    _, client = tools
    assert tool_slugs(kind="builtin") == ["calc"]
    assert listed(client, TOOLS, kind="http") == ["lookup", "refund"]


def test_tool_risk_class_filter_narrows_to_that_class(tools):
    _, client = tools
    assert tool_slugs(risk_class="spends_money") == ["refund"]
    assert listed(client, TOOLS, risk_class="read") == ["calc", "lookup"]


def test_tool_enabled_filter_narrows_to_that_state(tools):
    _, client = tools
    assert tool_slugs(enabled="false") == ["lookup"]
    assert listed(client, TOOLS, enabled="true") == ["calc", "refund"]


def test_tool_requires_approval_filter_narrows_to_that_state(tools):
    _, client = tools
    assert tool_slugs(requires_approval="true") == ["refund"]
    assert listed(client, TOOLS, requires_approval="false") == ["calc", "lookup"]


def test_tool_slug_filter_narrows_to_that_tool(tools):
    _, client = tools
    assert tool_slugs(slug="calc") == ["calc"]
    assert listed(client, TOOLS, slug="lookup") == ["lookup"]


# ------------------------------------------------------------------------------
# CredentialFilterSet
# ------------------------------------------------------------------------------
CREDENTIALS = "/api/v1/credentials"


@pytest.fixture
def credentials(projects):
    alpha, beta, client = projects
    CredentialFactory(project=alpha, name="a-openai", provider="openai")
    CredentialFactory(project=alpha, name="a-anthropic", provider="anthropic")
    CredentialFactory(project=beta, name="b-openai", provider="openai")
    return alpha, client


def credential_names(**params) -> list[str]:
    return sorted(c.name for c in filtered(CredentialFilterSet, ProviderCredential.objects.all(), **params))


def test_credential_project_filter_narrows_to_that_project(credentials):
    alpha, client = credentials
    assert credential_names(project=str(alpha.pk)) == ["a-anthropic", "a-openai"]
    assert listed(client, CREDENTIALS, "name", project=str(alpha.pk)) == ["a-anthropic", "a-openai"]


def test_credential_provider_filter_narrows_to_that_provider(credentials):
    _, client = credentials
    assert credential_names(provider="openai") == ["a-openai", "b-openai"]
    assert listed(client, CREDENTIALS, "name", provider="anthropic") == ["a-anthropic"]
    assert client.get(CREDENTIALS, {"provider": "skynet"}).status_code == 400


# ------------------------------------------------------------------------------
# ModelPriceFilterSet
# ------------------------------------------------------------------------------
PRICES = "/api/v1/model-prices"


def price_rows(**params) -> list[tuple[str, str]]:
    return sorted({(p.provider, p.model) for p in filtered(ModelPriceFilterSet, ModelPrice.objects.all(), **params)})


def test_price_provider_filter_narrows_to_that_provider(projects):
    _, _, client = projects
    assert price_rows(provider="echo") == [("echo", "echo-1")]
    assert set(listed(client, PRICES, "provider", provider="anthropic")) == {"anthropic"}


def test_price_model_filter_narrows_to_that_model(projects):
    _, _, client = projects
    assert price_rows(model="gpt-4o") == [("openai", "gpt-4o")]
    assert listed(client, PRICES, "model", model="o3") == ["o3"]


def test_price_current_filter_drops_superseded_and_future_prices(projects):
    _, _, client = projects
    newer = ModelPriceFactory(provider="echo", model="echo-1", effective_from=timezone.now() - timedelta(days=1))
    ModelPriceFactory(provider="echo", model="echo-1", effective_from=timezone.now() + timedelta(days=1))
    current = filtered(ModelPriceFilterSet, ModelPrice.objects.filter(provider="echo"), current="true")
    assert current == [newer]
    assert listed(client, PRICES, "id", provider="echo", current="true") == [newer.pk]
    assert len(listed(client, PRICES, "id", provider="echo", current="false")) == 3
