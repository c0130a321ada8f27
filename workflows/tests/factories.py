"""Factories for workflows, and small ones for the agents and tools a definition names (kept here
so these tests do not depend on the agents app's own test helpers)."""

import factory
from django.db.models import Max

from agents.models import Agent, Tool
from projects.tests.factories import ProjectFactory
from workflows.models import Workflow, WorkflowVersion


def agent_step(key: str, agent: str = "writer", **extra) -> dict:
    return {"key": key, "kind": "agent", "agent": agent, "prompt": f"Work on {{{{ inputs.topic }}}} as {key}.", **extra}


def tool_step(key: str, tool: str = "search", **extra) -> dict:
    return {"key": key, "kind": "tool", "tool": tool, "input": {"q": "{{ inputs.topic }}"}, **extra}


def approval_step(key: str, **extra) -> dict:
    return {"key": key, "kind": "approval", **extra}


def condition_step(key: str, **extra) -> dict:
    return {"key": key, "kind": "condition", "left": "{{ inputs.topic }}", "op": "==", "right": "x", **extra}


def definition(*steps: dict) -> dict:
    """A definition of the given steps; by default fetch (tool search) then summarize (agent writer)."""
    if not steps:
        steps = (
            tool_step("fetch"),
            agent_step("summarize", depends_on=["fetch"], prompt="Summarize {{ steps.fetch.output }}"),
        )
    return {"steps": list(steps)}


INPUT_SCHEMA = {"type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"]}
#: A project's agents and tools as validation reads them: slug -> usable.
CATALOG = {"agents": {"writer": True, "retired": False}, "tools": {"search": True, "legacy": False}}


class AgentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Agent
        django_get_or_create = ("project", "slug")

    project = factory.SubFactory(ProjectFactory)
    name = factory.LazyAttribute(lambda agent: agent.slug.title())
    slug = "writer"
    provider = "echo"
    model = "echo-1"


class ToolFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tool
        django_get_or_create = ("project", "slug")

    project = factory.SubFactory(ProjectFactory)
    name = factory.LazyAttribute(lambda tool: tool.slug.title())
    slug = "search"
    kind = "builtin"


def catalog_for(project) -> None:
    """The agent and tool the default definition names, in ``project``."""
    AgentFactory(project=project, slug="writer")
    ToolFactory(project=project, slug="search")


class WorkflowFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Workflow

    project = factory.SubFactory(ProjectFactory)
    name = factory.Sequence(lambda n: f"Workflow {n}")
    slug = factory.Sequence(lambda n: f"workflow-{n}")


def _next_number(workflow: Workflow) -> int:
    return (workflow.versions.aggregate(Max("number"))["number__max"] or 0) + 1


class WorkflowVersionFactory(factory.django.DjangoModelFactory):
    """A version row as stored; it does not check the definition (services do)."""

    class Meta:
        model = WorkflowVersion

    workflow = factory.SubFactory(WorkflowFactory)
    number = factory.LazyAttribute(lambda version: _next_number(version.workflow))
    definition = factory.LazyFunction(definition)
    input_schema = factory.LazyFunction(lambda: dict(INPUT_SCHEMA))
