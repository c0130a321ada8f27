"""The agents services on their own: the checks the API relies on, and what each one writes."""

import pytest
from django.core.exceptions import ValidationError

from agents import services, tools
from agents.models import Agent, ProviderCredential, Tool
from agents.tools.builtin import BUILTINS
from projects.tests.factories import ProjectFactory

from .factories import AgentFactory, CredentialFactory, HttpToolFactory, ToolFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def project():
    return ProjectFactory()


def new_agent(project, **fields) -> Agent:
    return Agent(project=project, **({"name": "A", "slug": "a", "provider": "echo", "model": "echo-1"} | fields))


def save_errors(**kwargs) -> dict:
    with pytest.raises(ValidationError) as excinfo:
        services.agent_save(**kwargs)
    return excinfo.value.message_dict


# ------------------------------------------------------------------------------
# Parameters and schemas
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "parameters",
    [{}, {"temperature": 0}, {"temperature": 2}, {"top_p": 0.5, "seed": -3}, {"stop": []}, {"presence_penalty": -2}],
)
def test_parameters_within_the_rules_have_no_errors(parameters):
    assert services.parameter_errors(parameters) == []


def test_an_integer_counts_as_a_number_but_a_number_not_as_an_integer():
    assert services.parameter_errors({"temperature": 1}) == []
    assert services.parameter_errors({"seed": 1.0}) == ["seed: must be an integer."]


@pytest.mark.parametrize(
    "schema", [{"type": "object"}, {"type": "object", "properties": {"q": {"type": "string"}}}, {}]
)
def test_valid_json_schemas_have_no_errors(schema):
    assert services.schema_errors(schema) == []


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "frog"}, "Not a valid JSON Schema"),
        ({"properties": {"q": {"minLength": -1}}}, "Not a valid JSON Schema"),
        (["type", "object"], "A JSON Schema must be an object."),
    ],
)
def test_invalid_json_schemas_are_reported(schema, message):
    (error,) = services.schema_errors(schema)
    assert error.startswith(message)


# ------------------------------------------------------------------------------
# agent_save
# ------------------------------------------------------------------------------
def test_agent_save_stores_the_agent_and_its_tools(project):
    tool = ToolFactory(project=project)
    agent = services.agent_save(agent=new_agent(project, parameters={"temperature": 0.5}), tool_list=[tool])
    stored = Agent.objects.get(pk=agent.pk)
    assert (stored.slug, stored.parameters) == ("a", {"temperature": 0.5})
    assert list(stored.tools.all()) == [tool]


def test_agent_save_without_a_tool_list_keeps_the_tools(project):
    tool = ToolFactory(project=project)
    agent = AgentFactory(project=project, tools=[tool])
    agent.description = "changed"
    services.agent_save(agent=agent)
    assert list(Agent.objects.get(pk=agent.pk).tools.all()) == [tool]


def test_agent_save_refuses_a_tool_of_another_project(project):
    foreign = ToolFactory(slug="foreign")
    assert save_errors(agent=new_agent(project), tool_list=[foreign]) == {
        "tools": ["Tools of another project: foreign."]
    }
    assert not Agent.objects.exists()


def test_agent_save_refuses_a_credential_of_another_project(project):
    foreign = CredentialFactory(provider="echo")
    errors = save_errors(agent=new_agent(project, credential=foreign))
    assert errors == {"credential": ["The credential belongs to another project."]}
    assert not Agent.objects.exists()


def test_agent_save_refuses_a_credential_for_another_provider(project):
    credential = CredentialFactory(project=project, provider="openai")
    errors = save_errors(agent=new_agent(project, credential=credential))
    assert errors == {"credential": ["The credential is for openai, not echo."]}


def test_agent_save_refuses_bad_parameters_before_touching_the_database(project):
    errors = save_errors(agent=new_agent(project, parameters={"temperature": 5}))
    assert errors == {"parameters": ["temperature: must be between 0 and 2."]}
    assert not Agent.objects.exists()


@pytest.mark.parametrize(("field", "value"), [("provider", "skynet"), ("max_tool_iterations", 51), ("slug", "a b")])
def test_agent_save_runs_the_model_validation(project, field, value):
    errors = save_errors(agent=new_agent(project, **{field: value}))
    assert field in errors
    assert not Agent.objects.exists()


def test_agent_save_refuses_a_duplicate_slug_and_keeps_the_tools_untouched(project):
    AgentFactory(project=project, slug="a")
    errors = save_errors(agent=new_agent(project), tool_list=[ToolFactory(project=project)])
    assert errors["__all__"] == ["An agent with this slug already exists in the project."]
    assert Agent.objects.count() == 1
    assert not Agent.tools.through.objects.exists()


# ------------------------------------------------------------------------------
# agent_health_check
# ------------------------------------------------------------------------------
def test_health_check_records_healthy_for_echo(project):
    agent = AgentFactory(project=project)
    services.agent_health_check(agent=agent)
    stored = Agent.objects.get(pk=agent.pk)
    assert (stored.health_status, stored.health_error) == ("healthy", "")
    assert stored.health_checked_at is not None
    assert stored.health_latency_ms >= 0


def test_health_check_records_an_unhealthy_provider_and_clears_it_when_healthy_again(project, settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = []
    credential = CredentialFactory(project=project, provider="openai", base_url="http://127.0.0.1:9/v1")
    agent = AgentFactory(project=project, provider="openai", model="gpt-4o-mini", credential=credential)

    services.agent_health_check(agent=agent)
    assert Agent.objects.get(pk=agent.pk).health_status == "unhealthy"
    assert "Refusing" in Agent.objects.get(pk=agent.pk).health_error

    agent.provider, agent.credential = "echo", None
    agent.save()
    services.agent_health_check(agent=agent)
    assert Agent.objects.values_list("health_status", "health_error").get(pk=agent.pk) == ("healthy", "")


# ------------------------------------------------------------------------------
# credential_save
# ------------------------------------------------------------------------------
def test_credential_save_encrypts_keeps_replaces_and_clears_the_secret(project):
    credential = services.credential_save(
        credential=ProviderCredential(project=project, name="k", provider="openai"), secret="sk-one"
    )
    stored = ProviderCredential.objects.get(pk=credential.pk)
    assert "sk-one" not in stored.secret_encrypted
    assert stored.get_secret() == "sk-one"

    services.credential_save(credential=stored)
    assert ProviderCredential.objects.get(pk=credential.pk).get_secret() == "sk-one"

    services.credential_save(credential=stored, secret="sk-two")
    assert ProviderCredential.objects.get(pk=credential.pk).get_secret() == "sk-two"

    services.credential_save(credential=stored, secret="")
    assert not ProviderCredential.objects.get(pk=credential.pk).has_secret


def test_credential_save_refuses_an_unknown_provider(project):
    with pytest.raises(ValidationError) as excinfo:
        services.credential_save(credential=ProviderCredential(project=project, name="k", provider="skynet"))
    assert "provider" in excinfo.value.message_dict
    assert not ProviderCredential.objects.exists()


# ------------------------------------------------------------------------------
# tool_save
# ------------------------------------------------------------------------------
def test_a_builtin_without_a_schema_gets_its_default_schema(project):
    tool = services.tool_save(
        tool=Tool(project=project, name="T", slug="t", kind="builtin", config={"function": "template"})
    )
    assert Tool.objects.get(pk=tool.pk).input_schema == BUILTINS["template"].input_schema


def test_a_builtin_keeps_the_schema_it_is_given(project):
    schema = {"type": "object", "properties": {"expression": {"type": "string", "maxLength": 10}}}
    tool = Tool(project=project, name="T", slug="t", kind="builtin", config={"function": "arithmetic"})
    tool.input_schema = schema
    services.tool_save(tool=tool)
    assert Tool.objects.get(pk=tool.pk).input_schema == schema


@pytest.mark.parametrize("config", [["arithmetic"], "arithmetic", {"function": "eval"}])
def test_a_builtin_with_a_bad_config_is_refused_not_crashed(project, config):
    with pytest.raises(ValidationError) as excinfo:
        services.tool_save(tool=Tool(project=project, name="T", slug="t", kind="builtin", config=config))
    assert excinfo.value.message_dict["config"][0].startswith("function: Unknown built-in")
    assert not Tool.objects.exists()


def test_tool_save_refuses_a_credential_of_another_project(project):
    tool = HttpToolFactory.build(project=project, credential=CredentialFactory())
    with pytest.raises(ValidationError) as excinfo:
        services.tool_save(tool=tool)
    assert excinfo.value.message_dict == {"credential": ["The credential belongs to another project."]}
    assert not Tool.objects.exists()


# ------------------------------------------------------------------------------
# tool_execute
# ------------------------------------------------------------------------------
def test_tool_execute_runs_a_valid_call(project):
    result = services.tool_execute(tool=ToolFactory(project=project), arguments={"expression": "6*7"})
    assert result.output == 42
    assert result.latency_ms >= 0


def test_tool_execute_refuses_input_that_breaks_the_schema(project):
    with pytest.raises(ValidationError) as excinfo:
        services.tool_execute(tool=ToolFactory(project=project), arguments={"expression": 42})
    assert excinfo.value.message_dict == {"input": ["expression: 42 is not of type 'string'"]}


def test_tool_execute_refuses_a_disabled_tool(project):
    with pytest.raises(tools.ToolError) as excinfo:
        services.tool_execute(tool=ToolFactory(project=project, enabled=False), arguments={"expression": "1"})
    assert excinfo.value.permanent
    assert "disabled" in str(excinfo.value)


def test_a_builtin_whose_schema_is_looser_than_its_function_fails_cleanly(project):
    tool = ToolFactory(project=project, input_schema={"type": "object"})
    with pytest.raises(tools.ToolError) as excinfo:
        services.tool_execute(tool=tool, arguments={})
    assert excinfo.value.permanent
    assert "'expression' is a required property" in str(excinfo.value)
