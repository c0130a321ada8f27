"""Agent, tool and credential services: validation across rows, health checks, tool test runs."""

import time
import uuid
from typing import Any

import jsonschema
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from sparkops.lib.errors import Refused

from . import providers, tools
from .choices import HealthStatus, RiskClass
from .models import Agent, ProviderCredential, Tool

# name -> (type, minimum, maximum); None bounds are open.
PARAMETER_RULES: dict[str, tuple[type, float | None, float | None]] = {
    "temperature": (float, 0, 2),
    "top_p": (float, 0, 1),
    "max_tokens": (int, 1, 1_000_000),
    "presence_penalty": (float, -2, 2),
    "frequency_penalty": (float, -2, 2),
    "seed": (int, None, None),
}
MAX_STOP_SEQUENCES = 4


def parameter_errors(parameters: Any) -> list[str]:
    if not isinstance(parameters, dict):
        return ["Parameters must be an object."]
    errors = []
    for name, value in parameters.items():
        if name == "stop":
            if not _is_stop_list(value):
                errors.append(f"stop: a list of at most {MAX_STOP_SEQUENCES} strings.")
        elif name not in PARAMETER_RULES:
            errors.append(f"{name}: unknown parameter; allowed: {', '.join(sorted([*PARAMETER_RULES, 'stop']))}.")
        else:
            errors.extend(_range_error(name, value, *PARAMETER_RULES[name]))
    return errors


def _is_stop_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) <= MAX_STOP_SEQUENCES and all(isinstance(s, str) for s in value)


def _range_error(name: str, value: Any, kind: type, low, high) -> list[str]:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if not numeric or (kind is int and not isinstance(value, int)):
        return [f"{name}: must be {'an integer' if kind is int else 'a number'}."]
    if (low is not None and value < low) or (high is not None and value > high):
        return [f"{name}: must be between {low} and {high}."]
    return []


def schema_errors(schema: Any) -> list[str]:
    if not isinstance(schema, dict):
        return ["A JSON Schema must be an object."]
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return [f"Not a valid JSON Schema: {exc.message}"]
    return []


# ------------------------------------------------------------------------------
# Credentials
# ------------------------------------------------------------------------------
def credential_save(*, credential: ProviderCredential, secret: str | None = None) -> ProviderCredential:
    """Create or update; ``secret`` None keeps the stored one, "" clears it."""
    if secret is not None:
        credential.set_secret(secret)
    credential.full_clean()
    credential.save()
    return credential


# ------------------------------------------------------------------------------
# Agents
# ------------------------------------------------------------------------------
def agent_errors(agent: Agent, tool_list: list[Tool] | None) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if problems := parameter_errors(agent.parameters):
        errors["parameters"] = problems
    credential = agent.credential
    if credential is not None and credential.project_id != agent.project_id:
        errors["credential"] = ["The credential belongs to another project."]
    elif credential is not None and credential.provider != agent.provider:
        errors["credential"] = [f"The credential is for {credential.provider}, not {agent.provider}."]
    if tool_list is not None:
        foreign = [t.slug for t in tool_list if t.project_id != agent.project_id]
        if foreign:
            errors["tools"] = [f"Tools of another project: {', '.join(foreign)}."]
    return errors


@transaction.atomic
def agent_save(*, agent: Agent, tool_list: list[Tool] | None = None) -> Agent:
    """Create or update an agent; ``tool_list`` None leaves its tools as they are."""
    errors = agent_errors(agent, tool_list)
    if errors:
        raise ValidationError(errors)
    agent.full_clean()
    agent.save()
    if tool_list is not None:
        agent.tools.set(tool_list)
    return agent


def agent_health_check(*, agent: Agent) -> Agent:
    """Make the cheapest real call the provider allows and record the outcome on the agent."""
    provider = providers.get(agent.provider)
    credential = agent.credential.as_provider_credential() if agent.credential else providers.base.Credential()
    started = time.monotonic()
    try:
        provider.health_check(model=agent.model, credential=credential)
        agent.health_status, agent.health_error = HealthStatus.HEALTHY, ""
    except providers.ProviderError as exc:
        agent.health_status, agent.health_error = HealthStatus.UNHEALTHY, str(exc)[:2000]
    agent.health_latency_ms = round((time.monotonic() - started) * 1000, 2)
    agent.health_checked_at = timezone.now()
    agent.save(update_fields=["health_status", "health_error", "health_latency_ms", "health_checked_at"])
    return agent


# ------------------------------------------------------------------------------
# Tools
# ------------------------------------------------------------------------------
def tool_errors(tool: Tool) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    try:
        executor = tools.get(tool.kind)
    except tools.ToolError as exc:
        return {"kind": [str(exc)]}
    config_errors = executor.validate_config(tool.config if isinstance(tool.config, dict) else {})
    if config_errors:
        errors["config"] = [f"{field}: {message}" for field, message in config_errors.items()]
    if problems := schema_errors(tool.input_schema):
        errors["input_schema"] = problems
    if tool.risk_class in _RISK_ORDER and _RISK_ORDER.index(tool.risk_class) < _RISK_ORDER.index(executor.risk_floor):
        errors["risk_class"] = [f"A {tool.kind} tool is at least {executor.risk_floor}."]
    if tool.credential is not None and tool.credential.project_id != tool.project_id:
        errors["credential"] = ["The credential belongs to another project."]
    return errors


def _fill_defaults(tool: Tool) -> None:
    """A builtin (or a sandbox tool) knows its own input schema; fill it in when none is given."""
    try:
        executor = tools.get(tool.kind)
    except tools.ToolError:
        return  # reported by tool_errors
    config = tool.config if isinstance(tool.config, dict) else {}  # a list or string is reported below
    if not tool.input_schema and executor.knows_input_schema and not executor.validate_config(config):
        tool.input_schema = executor.default_input_schema(config)
    # A kind that writes (a sandbox's files, a push) is never classed below it: raising is safe.
    if tool.risk_class in _RISK_ORDER and _RISK_ORDER.index(tool.risk_class) < _RISK_ORDER.index(executor.risk_floor):
        tool.risk_class = executor.risk_floor


def tool_save(*, tool: Tool, may_label: bool = True) -> Tool:
    """Create or update a tool. ``may_label`` False (a member below admin) keeps the tool's labels
    as an admin set them: see tool_label_errors."""
    if not may_label:
        _guard_labels(tool)
    _fill_defaults(tool)
    errors = tool_errors(tool)
    if errors:
        raise ValidationError(errors)
    tool.full_clean()
    tool.save()
    return tool


# ------------------------------------------------------------------------------
# Tool labels: what approval and allow-list policies key on
# ------------------------------------------------------------------------------
#: What a tool is until an admin classes it: the riskiest class, so every risk-class approval rule
#: covers a tool a developer made, or pointed somewhere else.
UNCLASSED_RISK = RiskClass.SPENDS_MONEY
#: What a tool does; changing any of them makes the class an admin gave it stale.
BEHAVIOUR_FIELDS = ("kind", "config", "credential_id")
_RISK_ORDER = list(RiskClass.values)


class LabelRefused(Refused):
    """A member below admin changed a label of a tool that only admins and owners change."""

    status_code = 403
    code = "permission_denied"


def tool_label_errors(*, tool: Tool, stored: Tool | None) -> dict[str, list[str]]:
    """Approval and allow-list policies (an admin's) name tools by slug and act on their risk class
    and approval flag. Below admin a member may make a tool stricter, never looser: no rename, no
    lower risk class (a new tool starts unclassed), no turning the approval flag off."""
    errors = {}
    if stored is not None and tool.slug != stored.slug:
        errors["slug"] = ["Only admins and owners rename a tool: policies name tools by slug."]
    floor = stored.risk_class if stored is not None else UNCLASSED_RISK
    if _RISK_ORDER.index(tool.risk_class) < _RISK_ORDER.index(floor):
        errors["risk_class"] = [
            f"Only admins and owners lower a tool's risk class (approval policies act on it); "
            f"yours may be {floor} or above."
        ]
    if stored is not None and stored.requires_approval and not tool.requires_approval:
        errors["requires_approval"] = ["Only admins and owners turn a tool's approval off."]
    return errors


def _guard_labels(tool: Tool) -> None:
    stored = None if tool._state.adding else Tool.objects.filter(pk=tool.pk).first()
    if errors := tool_label_errors(tool=tool, stored=stored):
        raise LabelRefused(f"Only admins and owners may change: {', '.join(errors)}.", errors=errors)
    if stored is not None and any(getattr(tool, f) != getattr(stored, f) for f in BEHAVIOUR_FIELDS):
        tool.risk_class = UNCLASSED_RISK  # the class was an admin's statement about what it did


def tool_input_errors(*, tool: Tool, arguments: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(tool.input_schema or {"type": "object"})
    return [f"{_path(e) or '(input)'}: {e.message}" for e in validator.iter_errors(arguments)]


def _path(error: jsonschema.ValidationError) -> str:
    return "/".join(map(str, error.absolute_path))


def tool_execute(*, tool: Tool, arguments: dict, limits: tools.CallLimits | None = None) -> tools.ToolResult:
    """Validate the arguments against the tool's schema and run it once, within ``limits`` (a
    test run from the API gets a fresh idempotency key). Raises ValidationError for bad arguments
    and ToolError for a failed call."""
    if problems := tool_input_errors(tool=tool, arguments=arguments):
        raise ValidationError({"input": problems})
    if not tool.enabled:
        raise tools.ToolError("The tool is disabled.", permanent=True)
    if limits is None:
        limits = tools.CallLimits(idempotency_key=f"test:{uuid.uuid4()}")
    secret = tool.credential.get_secret() if tool.credential else ""
    return tools.get(tool.kind).execute(config=tool.config, arguments=arguments, secret=secret, limits=limits)
