"""What each step kind does. Functions here call adapters and record each call's tokens and
cost as it happens; they never change a step's status (core does, through transitions)."""

import json
import operator
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from jinja2 import TemplateError

from agents import providers, tools
from agents import services as agent_services
from agents.models import Agent, Tool
from agents.providers.base import CompletionRequest, Credential, Message, ToolSpec
from agents.selectors import cost_of_call
from workflows import dag, templating

from ..choices import EventType, RunStatus
from ..models import Run, RunStep
from .transitions import emit_many


class StepFailed(Exception):
    """The attempt failed. ``permanent`` ones are not retried."""

    def __init__(self, message: str, *, permanent: bool, kind: str = "StepFailed", retry_after: float | None = None):
        super().__init__(message)
        self.permanent, self.kind, self.retry_after = permanent, kind, retry_after

    def as_error(self) -> dict:
        return {"type": self.kind, "message": str(self), "permanent": self.permanent}


class StepCancelled(Exception):
    """The run is being cancelled; the step stops at this check."""


@dataclass
class StepContext:
    run: Run
    step: RunStep
    spec: dict
    outputs: dict[str, Any]
    deadline: float
    untaken: list[str] = field(default_factory=list)
    #: Events not yet written; they go out with the next write, in one statement.
    pending: list[tuple] = field(default_factory=list)
    #: Tokens and cost of calls not yet written (the step's last call waits for its outcome).
    totals: dict[str, Any] = field(default_factory=dict)

    def emit(self, type_: str, payload: dict) -> None:
        self.pending.append((type_, self.step, payload))
        self.flush()

    def flush(self) -> None:
        """Write what is held back, accounting and events, in one transaction."""
        events, self.pending = self.pending, []
        totals, self.totals = self.totals, {}
        with transaction.atomic(savepoint=False):  # no savepoint when nested: nothing here is caught
            if totals:
                increments = {name: F(name) + value for name, value in totals.items()}
                RunStep.objects.filter(pk=self.step.pk).update(**increments)
                Run.objects.filter(pk=self.run.pk).update(**increments)
            emit_many(self.run.pk, events)

    def render(self, source: str) -> str:
        try:
            return templating.render(source, inputs=self.run.inputs, steps=self.outputs)
        except TemplateError as exc:
            raise StepFailed(f"Template error: {exc}", permanent=True, kind="TemplateError") from exc

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise StepFailed("The step ran out of time.", permanent=False, kind="Timeout")
        return left

    def check_cancel(self) -> None:
        if Run.objects.filter(pk=self.run.pk, status=RunStatus.CANCELLING).exists():
            raise StepCancelled()


# ------------------------------------------------------------------------------
# Accounting
# ------------------------------------------------------------------------------
def record_llm_call(ctx: StepContext, *, agent: Agent, result, iteration: int, final: bool = False) -> None:
    """Add one call's tokens and cost to the step and the run for good: a step that fails or is
    cancelled later has still spent them. A step's final call is written with the step's outcome,
    in the same transaction, instead of in one of its own."""
    cost, price = cost_of_call(
        provider=agent.provider, model=agent.model, input_tokens=result.input_tokens, output_tokens=result.output_tokens
    )
    for name, value in (
        ("input_tokens", result.input_tokens),
        ("output_tokens", result.output_tokens),
        ("cost_usd", cost or Decimal(0)),
        ("unpriced_calls", 0 if price else 1),
    ):
        ctx.totals[name] = ctx.totals.get(name, 0) + value
    ctx.pending.append(
        (
            EventType.LLM_CALL,
            ctx.step,
            {
                "key": ctx.step.key,
                "iteration": iteration,
                "provider": agent.provider,
                "model": agent.model,
                "input_tokens": result.input_tokens,
                "output_tokens": result.output_tokens,
                "cost_usd": str(cost) if cost is not None else None,
                "price_id": price.pk if price else None,
                "latency_ms": round(result.latency_ms, 2),
                "tool_calls": [c.name for c in result.tool_calls],
            },
        )
    )
    if not final:
        ctx.flush()


def _record_tool_call(
    ctx: StepContext, tool_name: str, arguments: Any, output: Any, error: str, latency_ms: float
) -> None:
    ctx.emit(
        EventType.TOOL_CALL,
        {
            "key": ctx.step.key,
            "tool": tool_name,
            "arguments": arguments,
            "output": output,
            "error": error,
            "latency_ms": round(latency_ms, 2),
        },
    )


# ------------------------------------------------------------------------------
# Tool calls, shared by tool steps and the agent's tool loop
# ------------------------------------------------------------------------------
def call_tool(ctx: StepContext, tool: Tool, arguments: Any) -> Any:
    started = time.monotonic()
    try:
        result = agent_services.tool_execute(tool=tool, arguments=arguments)
    except ValidationError as exc:
        message = "; ".join(exc.message_dict.get("input", exc.messages))
        _record_tool_call(ctx, tool.slug, arguments, None, message, (time.monotonic() - started) * 1000)
        raise StepFailed(f"Invalid input for {tool.slug}: {message}", permanent=True, kind="InvalidToolInput") from exc
    except tools.ToolError as exc:
        _record_tool_call(ctx, tool.slug, arguments, None, str(exc), (time.monotonic() - started) * 1000)
        raise StepFailed(str(exc), permanent=exc.permanent, kind="ToolError", retry_after=exc.retry_after) from exc
    _record_tool_call(ctx, tool.slug, arguments, result.output, "", result.latency_ms)
    ctx.step.latency_ms = (ctx.step.latency_ms or 0) + result.latency_ms
    return result.output


def _project_tool(ctx: StepContext, slug: str) -> Tool:
    tool = Tool.objects.select_related("credential").filter(project_id=ctx.run.project_id, slug=slug).first()
    if tool is None:
        raise StepFailed(f"Tool {slug!r} no longer exists.", permanent=True, kind="MissingTool")
    return tool


# ------------------------------------------------------------------------------
# Step kinds
# ------------------------------------------------------------------------------
def run_tool_step(ctx: StepContext) -> Any:
    tool = _project_tool(ctx, ctx.spec["tool"])
    try:
        arguments = templating.render_value(ctx.spec.get("input", {}), inputs=ctx.run.inputs, steps=ctx.outputs)
    except TemplateError as exc:
        raise StepFailed(f"Template error: {exc}", permanent=True, kind="TemplateError") from exc
    _save_input(ctx, {"tool": tool.slug, "input": arguments}, tool=tool)
    ctx.check_cancel()
    return call_tool(ctx, tool, arguments)


def run_agent_step(ctx: StepContext) -> str:
    agent = (
        Agent.objects.select_related("credential").filter(project_id=ctx.run.project_id, slug=ctx.spec["agent"]).first()
    )
    if agent is None or not agent.is_active:
        raise StepFailed(
            f"Agent {ctx.spec['agent']!r} is missing or disabled.", permanent=True, kind="AgentUnavailable"
        )
    prompt = ctx.render(ctx.spec["prompt"])
    _save_input(ctx, {"agent": agent.slug, "prompt": prompt}, agent=agent, provider=agent.provider, model=agent.model)
    return _converse(ctx, agent, prompt)


def _converse(ctx: StepContext, agent: Agent, prompt: str) -> str:
    """The tool-call loop: ask, run the tools the model asks for, answer, up to the agent's limit."""
    provider = providers.get(agent.provider)
    allowed = {tool.slug: tool for tool in agent.tools.select_related("credential") if tool.enabled}
    specs = [ToolSpec(t.slug, t.description or t.name, t.input_schema or {"type": "object"}) for t in allowed.values()]
    credential = agent.credential.as_provider_credential() if agent.credential else Credential()
    messages = [Message("user", prompt)]
    for iteration in range(agent.max_tool_iterations + 1):
        if iteration:  # before the first call, execute() has just checked the run's status
            ctx.check_cancel()
        request = CompletionRequest(
            model=agent.model,
            messages=messages,
            system_prompt=agent.system_prompt,
            tools=specs,
            parameters=agent.parameters,
            credential=credential,
            timeout=ctx.remaining(),
        )
        result = _complete(provider, request)
        ctx.step.latency_ms = (ctx.step.latency_ms or 0) + result.latency_ms
        record_llm_call(ctx, agent=agent, result=result, iteration=iteration, final=not result.tool_calls)
        ctx.check_cancel()  # a call that returned after the cancel request is counted, not used
        if not result.tool_calls:
            return result.text
        if iteration == agent.max_tool_iterations:
            raise StepFailed(
                f"Still calling tools after {agent.max_tool_iterations} rounds.", permanent=True, kind="ToolLoopLimit"
            )
        messages.append(Message("assistant", result.text, tool_calls=result.tool_calls))
        messages.extend(_answer_tool_calls(ctx, allowed, result.tool_calls))
    raise AssertionError("unreachable")


def _complete(provider, request: CompletionRequest):
    try:
        return provider.complete(request)
    except providers.ProviderError as exc:
        raise StepFailed(str(exc), permanent=exc.permanent, kind="ProviderError", retry_after=exc.retry_after) from exc


def _answer_tool_calls(ctx: StepContext, allowed: dict[str, Tool], calls) -> list[Message]:
    """One tool message per call. A refused or failed call is told to the model, which can
    correct itself, rather than failing the step."""
    answers = []
    for call in calls:
        ctx.check_cancel()
        tool = allowed.get(call.name)
        if tool is None:
            content = {"error": f"Tool {call.name!r} is not available to this agent."}
            _record_tool_call(ctx, call.name, call.arguments, None, content["error"], 0)
        else:
            content = _tool_answer(ctx, tool, call.arguments)
        answers.append(Message("tool", json.dumps(content, default=str), tool_call_id=call.id))
    return answers


def _tool_answer(ctx: StepContext, tool: Tool, arguments: dict) -> Any:
    try:
        return {"output": call_tool(ctx, tool, arguments)}
    except StepFailed as exc:
        return {"error": str(exc)}


_COMPARE = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "contains": lambda left, right: right in left,
    "in": lambda left, right: left in right,
}


def _coerce(value: Any) -> Any:
    """Rendered templates are text; compare "3" and 10 as numbers, "true" as a boolean."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def run_condition_step(ctx: StepContext, definition: dict) -> dict:
    left = _coerce(ctx.render(ctx.spec["left"]) if isinstance(ctx.spec["left"], str) else ctx.spec["left"])
    right_raw = ctx.spec["right"]
    right = _coerce(ctx.render(right_raw) if isinstance(right_raw, str) else right_raw)
    try:
        outcome = bool(_COMPARE[ctx.spec["op"]](left, right))
    except TypeError as exc:
        raise StepFailed(
            f"Cannot compare {left!r} {ctx.spec['op']} {right!r}.", permanent=True, kind="ConditionError"
        ) from exc
    _save_input(ctx, {"left": left, "op": ctx.spec["op"], "right": right})
    ctx.untaken = dag.untaken_branch(definition, ctx.step.key, outcome)
    return {"result": outcome, "branch": "then" if outcome else "else"}


def _save_input(ctx: StepContext, value: dict, **fields) -> None:
    """Note what the step was given; written with the step's outcome (one UPDATE, not two)."""
    ctx.step.input = value
    for name, field_value in fields.items():
        setattr(ctx.step, name, field_value)


def recorded_fields(step: RunStep) -> dict:
    """What an attempt learned about itself, for the UPDATE that records its outcome."""
    return {
        "input": step.input,
        "agent_id": step.agent_id,
        "tool_id": step.tool_id,
        "provider": step.provider,
        "model": step.model,
        "latency_ms": step.latency_ms,
    }
