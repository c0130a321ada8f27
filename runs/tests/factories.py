"""Helpers for the runs tests: a project catalog (echo agents, a builtin tool, an OpenAI-compatible
agent pointed at a local server) and published workflows, all built through the services, so the
rows are the ones the API and the admin would have written."""

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from agents import services as agent_services
from agents.models import Agent, ModelPrice, ProviderCredential, Tool
from runs import services
from runs.choices import EventType, RunStatus
from runs.models import Run, RunEvent, RunStep
from workflows import services as workflow_services
from workflows.models import Workflow
from workflows.selectors import latest_published_version

NAME_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
EXPR_SCHEMA = {"type": "object", "properties": {"expr": {"type": "string"}}, "required": ["expr"]}
# The seeded demo price of echo-1 (agents migration 0002). Flushing tests (transactional_db)
# delete seeded rows, so tests that count cost put it back.
ECHO_PRICE = (Decimal("1.00"), Decimal("2.00"))


def echo_price() -> ModelPrice:
    price, _ = ModelPrice.objects.get_or_create(
        provider="echo",
        model="echo-1",
        effective_from=datetime(2025, 1, 1, tzinfo=UTC),
        defaults={"input_usd_per_mtok": ECHO_PRICE[0], "output_usd_per_mtok": ECHO_PRICE[1]},
    )
    return price


# ------------------------------------------------------------------------------
# The catalog a definition names
# ------------------------------------------------------------------------------
@dataclass
class Catalog:
    project: object
    calc: Tool  # builtin arithmetic
    writer: Agent  # echo, no tools
    helper: Agent  # echo, may call calc


def tool(project, slug: str = "calc", function: str = "arithmetic", **fields) -> Tool:
    built = Tool(project=project, name=slug.title(), slug=slug, kind="builtin", config={"function": function}, **fields)
    return agent_services.tool_save(tool=built)


def echo_agent(project, slug: str, tools: list[Tool] | None = None, **fields) -> Agent:
    agent = Agent(project=project, name=slug.title(), slug=slug, provider="echo", model="echo-1", **fields)
    return agent_services.agent_save(agent=agent, tool_list=tools or [])


def stocked(project):
    """``project`` with the echo price, a read-only calc tool and two echo agents (writer, and
    helper with the tool): what the policy tests run their workflows with."""
    echo_price()
    calc = tool(project)
    echo_agent(project, "writer")
    echo_agent(project, "helper", [calc])
    return project


def openai_agent(project, base_url: str, slug: str = "remote", tools: list[Tool] | None = None, **fields) -> Agent:
    """An agent speaking the OpenAI wire format to ``base_url`` (a local ProviderServer)."""
    credential = ProviderCredential(project=project, name=f"{slug} key", provider="openai", base_url=base_url)
    agent_services.credential_save(credential=credential, secret="sk-test")
    agent = Agent(
        project=project, name=slug.title(), slug=slug, provider="openai", model="local-model", credential=credential
    )
    for name, value in fields.items():
        setattr(agent, name, value)
    return agent_services.agent_save(agent=agent, tool_list=tools or [])


def make_catalog(project) -> Catalog:
    echo_price()
    calc = tool(project)
    return Catalog(project, calc, echo_agent(project, "writer"), echo_agent(project, "helper", [calc]))


# ------------------------------------------------------------------------------
# Steps and workflows
# ------------------------------------------------------------------------------
def agent_step(key: str, agent: str = "writer", prompt: str = "Hello {{ inputs.name }}", **extra) -> dict:
    return {"key": key, "kind": "agent", "agent": agent, "prompt": prompt, **extra}


def tool_step(key: str, expression: str = "{{ inputs.expr }}", tool_slug: str = "calc", **extra) -> dict:
    return {"key": key, "kind": "tool", "tool": tool_slug, "input": {"expression": expression}, **extra}


def approval_step(key: str, **extra) -> dict:
    return {"key": key, "kind": "approval", "message": "Go ahead?", **extra}


def condition_step(key: str, left: str, op: str, right, then=(), otherwise=(), **extra) -> dict:
    return {"key": key, "kind": "condition", "left": left, "op": op, "right": right,
            "then": list(then), "else": list(otherwise), **extra}  # fmt: skip


def make_workflow(
    project, *steps: dict, slug: str = "wf", schema: dict | None = None, publish: bool = True
) -> Workflow:
    """A workflow whose version 1 holds ``steps`` (default: agent a, then agent b reading a)."""
    if not steps:
        steps = (agent_step("a"), agent_step("b", prompt="Again: {{ steps.a.output }}", depends_on=["a"]))
    return workflow_services.workflow_create(
        project=project,
        user=None,
        name=slug.title(),
        slug=slug,
        definition={"steps": list(steps)},
        input_schema=NAME_SCHEMA if schema is None else schema,
        publish=publish,
    )


def start(workflow: Workflow, inputs: dict | None = None, **kwargs) -> Run:
    run, _ = services.run_start(workflow=workflow, inputs={"name": "Ada"} if inputs is None else inputs, **kwargs)
    run.refresh_from_db()
    return run


def bare_run(workflow: Workflow, inputs: dict | None = None, status: str = RunStatus.QUEUED, **fields) -> Run:
    """A run and its pending steps as run_start writes them, but with no advance enqueued: what a
    crash between commit and enqueue (or a lost message) leaves behind."""
    version = latest_published_version(workflow)
    run = Run.objects.create(
        project_id=workflow.project_id,
        workflow=workflow,
        workflow_version=version,
        inputs={"name": "Ada"} if inputs is None else inputs,
        status=status,
        **fields,
    )
    for position, spec in enumerate(version.definition["steps"]):
        RunStep.objects.create(run=run, key=spec["key"], kind=spec["kind"], position=position, max_attempts=3)
    return run


# ------------------------------------------------------------------------------
# Reading the outcome
# ------------------------------------------------------------------------------
def step_of(run: Run, key: str) -> RunStep:
    return RunStep.objects.get(run=run, key=key)


def statuses(run: Run) -> dict[str, str]:
    return dict(RunStep.objects.filter(run=run).values_list("key", "status"))


def event_types(run: Run, **filters) -> list[str]:
    return list(RunEvent.objects.filter(run=run, **filters).order_by("sequence").values_list("type", flat=True))


def events(run: Run, type_: str) -> list[RunEvent]:
    return list(RunEvent.objects.filter(run=run, type=type_).select_related("step").order_by("sequence"))


def llm_calls(run: Run, key: str) -> int:
    return RunEvent.objects.filter(run=run, type=EventType.LLM_CALL, step__key=key).count()
