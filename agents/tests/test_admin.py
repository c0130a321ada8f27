"""The admin for agents, tools, credentials and prices: pages open, forms run the same checks as
the API, the secret is write-only, and the health-check action records its result."""

import json

import pytest
from django.test import Client
from django.urls import reverse

from accounts.tests.factories import UserFactory
from agents.models import Agent, ModelPrice, ProviderCredential, Tool
from agents.tools.builtin import BUILTINS
from projects.tests.factories import ProjectFactory

from .factories import AgentFactory, CredentialFactory, HttpToolFactory, ToolFactory

SECRET = "sk-admin-0123456789"


@pytest.fixture
def admin_client(db) -> Client:
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def project(db):
    return ProjectFactory()


def agent_form(project, **fields) -> dict:
    return {
        "project": project.pk,
        "name": "Researcher",
        "slug": "researcher",
        "provider": "echo",
        "model": "echo-1",
        "parameters": json.dumps({"temperature": 0.2}),
        "max_tool_iterations": 5,
        "status": "active",
    } | fields


def tool_form(project, **fields) -> dict:
    return {
        "project": project.pk,
        "name": "Calculator",
        "slug": "calc",
        "kind": "builtin",
        "input_schema": "{}",
        "config": json.dumps({"function": "arithmetic"}),
        "risk_class": "read",
        "enabled": "on",
    } | fields


# ------------------------------------------------------------------------------
# Pages open
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["agent", "tool", "providercredential", "modelprice"])
def test_a_superuser_opens_the_changelist_and_add_form(admin_client, project, model):
    AgentFactory(project=project, tools=[ToolFactory(project=project)])
    CredentialFactory(project=project)
    assert admin_client.get(reverse(f"admin:agents_{model}_changelist")).status_code == 200
    assert admin_client.get(reverse(f"admin:agents_{model}_add")).status_code == 200


@pytest.mark.parametrize(
    ("factory", "model"),
    [
        (AgentFactory, "agent"),
        (ToolFactory, "tool"),
        (HttpToolFactory, "tool"),
        (CredentialFactory, "providercredential"),
    ],
)
def test_a_superuser_opens_a_change_form(admin_client, project, factory, model):
    obj = factory(project=project)
    assert admin_client.get(reverse(f"admin:agents_{model}_change", args=[obj.pk])).status_code == 200


def test_the_price_changelist_lists_the_seeded_prices(admin_client):
    response = admin_client.get(reverse("admin:agents_modelprice_changelist"), {"q": "echo"})
    assert [str(p) for p in response.context["cl"].result_list] == ["echo/echo-1 from 2025-01-01"]


def test_the_agent_changelist_searches_by_model(admin_client, project):
    AgentFactory(project=project, name="Critic", provider="openai", model="gpt-4o")
    AgentFactory(project=project, name="Echoer")
    response = admin_client.get(reverse("admin:agents_agent_changelist"), {"q": "gpt-4o"})
    assert [a.name for a in response.context["cl"].result_list] == ["Critic"]


# ------------------------------------------------------------------------------
# Credentials: the secret is write-only
# ------------------------------------------------------------------------------
def add_credential(admin_client, project, **fields):
    data = {"project": project.pk, "name": "OpenAI", "provider": "openai", "base_url": "", "secret": SECRET}
    return admin_client.post(reverse("admin:agents_providercredential_add"), data | fields)


def test_creating_a_credential_stores_the_secret_encrypted(admin_client, project):
    response = add_credential(admin_client, project)

    assert response.status_code == 302, response.context["adminform"].form.errors
    credential = ProviderCredential.objects.get()
    assert credential.get_secret() == SECRET
    assert SECRET not in credential.secret_encrypted
    assert credential.created_by.is_superuser


def test_the_secret_is_never_rendered_back(admin_client, project):
    add_credential(admin_client, project)
    credential = ProviderCredential.objects.get()

    change = admin_client.get(reverse("admin:agents_providercredential_change", args=[credential.pk]))
    listing = admin_client.get(reverse("admin:agents_providercredential_changelist"))

    for page in (change, listing):
        assert SECRET not in page.content.decode()
        assert credential.secret_encrypted not in page.content.decode()


def test_saving_a_credential_with_an_empty_secret_keeps_the_stored_one(admin_client, project):
    credential = CredentialFactory(project=project, name="Prod", secret=SECRET)
    data = {"project": project.pk, "name": "Prod renamed", "provider": "openai", "base_url": "", "secret": ""}

    response = admin_client.post(reverse("admin:agents_providercredential_change", args=[credential.pk]), data)

    assert response.status_code == 302
    credential.refresh_from_db()
    assert (credential.name, credential.get_secret()) == ("Prod renamed", SECRET)


def test_a_credential_for_an_unknown_provider_is_refused(admin_client, project):
    response = add_credential(admin_client, project, provider="skynet")
    assert response.status_code == 200
    assert "provider" in response.context["adminform"].form.errors
    assert not ProviderCredential.objects.exists()


# ------------------------------------------------------------------------------
# Agents: the same checks as the API
# ------------------------------------------------------------------------------
def test_creating_an_agent_in_the_admin_stores_it(admin_client, project):
    tool = ToolFactory(project=project)
    response = admin_client.post(reverse("admin:agents_agent_add"), agent_form(project, tools=[tool.pk]))
    assert response.status_code == 302, response.context["adminform"].form.errors
    agent = Agent.objects.get()
    assert (agent.slug, agent.parameters, list(agent.tools.all())) == ("researcher", {"temperature": 0.2}, [tool])


@pytest.mark.parametrize(
    ("parameters", "message"),
    [({"temperature": 7}, "temperature: must be between 0 and 2."), ({"top_k": 1}, "top_k: unknown parameter")],
)
def test_an_agent_with_bad_parameters_shows_an_error_and_saves_nothing(admin_client, project, parameters, message):
    data = agent_form(project, parameters=json.dumps(parameters))
    response = admin_client.post(reverse("admin:agents_agent_add"), data)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["parameters"][0].startswith(message)
    assert message in response.content.decode()
    assert not Agent.objects.exists()


def test_an_agent_with_a_tool_of_another_project_is_refused(admin_client, project):
    foreign = ToolFactory(slug="foreign")
    response = admin_client.post(reverse("admin:agents_agent_add"), agent_form(project, tools=[foreign.pk]))
    assert response.context["adminform"].form.errors["tools"] == ["Tools of another project: foreign."]
    assert not Agent.objects.exists()


def test_an_agent_with_a_credential_for_another_provider_is_refused(admin_client, project):
    credential = CredentialFactory(project=project, provider="openai")
    response = admin_client.post(reverse("admin:agents_agent_add"), agent_form(project, credential=credential.pk))
    assert response.context["adminform"].form.errors["credential"] == ["The credential is for openai, not echo."]
    assert not Agent.objects.exists()


def test_the_health_check_action_records_a_result(admin_client, project, settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = []
    healthy = AgentFactory(project=project)
    credential = CredentialFactory(project=project, provider="openai", base_url="http://10.0.0.1/v1")
    blocked = AgentFactory(project=project, provider="openai", model="gpt-4o-mini", credential=credential)

    response = admin_client.post(
        reverse("admin:agents_agent_changelist"),
        {"action": "health_check", "_selected_action": [healthy.pk, blocked.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert "Checked 2 agent(s)." in response.content.decode()
    healthy.refresh_from_db()
    blocked.refresh_from_db()
    assert (healthy.health_status, healthy.health_checked_at is not None) == ("healthy", True)
    assert blocked.health_status == "unhealthy"
    assert "Refusing" in blocked.health_error


# ------------------------------------------------------------------------------
# Tools
# ------------------------------------------------------------------------------
def test_a_builtin_created_in_the_admin_gets_its_default_schema(admin_client, project):
    response = admin_client.post(reverse("admin:agents_tool_add"), tool_form(project))
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Tool.objects.get().input_schema == BUILTINS["arithmetic"].input_schema


def test_a_tool_with_a_bad_config_shows_an_error_and_saves_nothing(admin_client, project):
    data = tool_form(project, kind="http", config=json.dumps({"method": "GET", "url": "file:///etc/passwd"}))
    response = admin_client.post(reverse("admin:agents_tool_add"), data)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["config"][0].startswith("url:")
    assert not Tool.objects.exists()


# ------------------------------------------------------------------------------
# Prices
# ------------------------------------------------------------------------------
def test_a_price_change_is_added_as_a_new_row(admin_client):
    before = ModelPrice.objects.count()
    data = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_usd_per_mtok": "0.10",
        "output_usd_per_mtok": "0.40",
        "effective_from_0": "2030-01-01",
        "effective_from_1": "00:00:00",
    }
    response = admin_client.post(reverse("admin:agents_modelprice_add"), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert ModelPrice.objects.count() == before + 1
    assert ModelPrice.objects.filter(model="gpt-4o-mini").count() == 2
