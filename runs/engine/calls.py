"""Calls a step makes, shared by the step kinds: provider and tool calls, the policies asked before
each, and the accounting of tokens and cost as each call happens. Nothing here changes a step's
status (core does, through transitions)."""

import hashlib
import json
import time
from decimal import Decimal
from functools import partial
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from agents import services as agent_services
from agents import tools
from agents.models import Agent, ModelPrice, Tool
from agents.providers.base import CompletionRequest
from policies import services as policy_services

from ..choices import EventType
from . import spans
from .context import StepContext, StepFailed, StepHeld, StepTimedOut
from .durability import durably

UNREAD = object()  # record_llm_call: the call's price was not read yet


def record_llm_call(
    ctx: StepContext,
    *,
    agent: Agent,
    result,
    iteration: int,
    final: bool = False,
    call: policy_services.Call | None = None,
    entry_id: int | None = None,
    price: ModelPrice | object | None = UNREAD,
) -> None:
    """Add one call's tokens and cost to the step, the run and the spend ledger for good: a step
    that fails or is cancelled later has still spent them. A step's final call is written with the
    step's outcome, in the same transaction, instead of in one of its own. ``price``: the row in
    force when the call started, when its estimate already read it (None: unpriced)."""
    if price is UNREAD:
        # The call has happened: a dropped connection must not lose it (and repeat it later).
        read_price = partial(ctx.catalog.price, agent.provider, agent.model)
        price = durably(read_price, until=ctx.step.lease_expires_at)
    cost = price.cost(result.input_tokens, result.output_tokens) if price else None
    ctx.spend.append(
        {
            "call": call or call_facts(ctx, agent=agent),
            "entry_id": entry_id,
            "input_tokens": result.input_tokens,
            "output_tokens": result.output_tokens,
            "cost": cost,
            "price": price,
        }
    )
    spans.record_usage(result, cost)
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


def record_tool_call(
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
# Policies before each call
# ------------------------------------------------------------------------------
def call_facts(ctx: StepContext, **fields) -> policy_services.Call:
    agent = fields.get("agent")
    if agent is not None:
        fields.update(provider=agent.provider, model=agent.model)
    return policy_services.Call(
        project_id=ctx.run.project_id,
        run_id=ctx.run.pk,
        step_id=ctx.step.pk,
        attempt=ctx.step.attempt,
        workflow_id=ctx.run.workflow_id,
        workflow_slug=ctx.run.workflow.slug,
        **fields,
    )


def estimate_call(
    ctx: StepContext, agent: Agent, request: CompletionRequest
) -> tuple[Decimal | None, int, ModelPrice | None]:
    """The most a call can cost: every byte of the prompt a token (no tokenizer makes more), and
    the agent's max_tokens (or the provider default) of output; with the price it used. The cost
    is None when the model is unpriced."""
    text = request.system_prompt + json.dumps(
        [[m.content, [c.arguments for c in m.tool_calls or []]] for m in request.messages], default=str
    )
    text += json.dumps([[t.name, t.description, t.input_schema] for t in request.tools])
    input_tokens = len(text.encode())
    output_tokens = int(request.parameters.get("max_tokens") or settings.SPARKOPS_DEFAULT_MAX_OUTPUT_TOKENS)
    price = ctx.catalog.price(agent.provider, agent.model)
    cost = price.cost(input_tokens, output_tokens) if price else None
    return cost, input_tokens + output_tokens, price


def call_policies(ctx: StepContext) -> list:
    if ctx.policies is None:
        ctx.policies = ctx.catalog.call_policies(ctx.run.project_id)
    return ctx.policies


def ask_policies(ctx: StepContext, call: policy_services.Call, arguments: Any = None) -> policy_services.Verdict:
    """Judge the call; a block fails the attempt for good, an approval parks the step."""
    if not call_policies(ctx) and not (call.tool is not None and call.tool.requires_approval):
        return policy_services.Verdict()
    call.granted = frozenset((ctx.step.hold or {}).get("granted", []))
    verdict = policy_services.call_verdict(call, ctx.policies)
    for decision in verdict.decisions:
        ctx.pending.append((EventType.POLICY_DECISION, ctx.step, _decision_payload(ctx, decision)))
    spans.record_verdict(verdict)
    if verdict.outcome == "blocked":
        raise StepFailed(verdict.hit.reason, permanent=True, kind="PolicyBlocked")
    if verdict.outcome == "approval":
        raise StepHeld(verdict.hit, arguments)
    return verdict


def _decision_payload(ctx: StepContext, decision) -> dict:
    return {
        "key": ctx.step.key,
        "policy": decision.policy_id,
        "stage": decision.stage,
        "outcome": decision.outcome,
        "reason": decision.reason,
    }


# ------------------------------------------------------------------------------
# Tool calls, shared by tool steps and the agent's tool loop
# ------------------------------------------------------------------------------
def call_tool(ctx: StepContext, tool: Tool, arguments: Any) -> Any:
    with spans.tool_span(ctx, tool.slug):
        return _call_tool(ctx, tool, arguments)


def _call_tool(ctx: StepContext, tool: Tool, arguments: Any) -> Any:
    ask_policies(ctx, call_facts(ctx, tool=tool), arguments)
    # No call may outlive the step: the lease is the step's timeout plus a margin, and a call
    # past it would be taken over by another worker and sent twice.
    limits = tools.CallLimits(
        timeout=ctx.remaining(), idempotency_key=idempotency_key(ctx, tool, arguments), run_id=str(ctx.run.pk)
    )
    started = time.monotonic()
    try:
        result = agent_services.tool_execute(tool=tool, arguments=arguments, limits=limits)
    except ValidationError as exc:
        message = "; ".join(exc.message_dict.get("input", exc.messages))
        record_tool_call(ctx, tool.slug, arguments, None, message, (time.monotonic() - started) * 1000)
        raise StepFailed(f"Invalid input for {tool.slug}: {message}", permanent=True, kind="InvalidToolInput") from exc
    except tools.ToolError as exc:
        record_tool_call(ctx, tool.slug, arguments, None, str(exc), (time.monotonic() - started) * 1000)
        if exc.timed_out and ctx.timed_out():
            raise StepTimedOut(f"The step ran out of time calling {tool.slug}: {exc}") from exc
        raise StepFailed(str(exc), permanent=exc.permanent, kind="ToolError", retry_after=exc.retry_after) from exc
    record_tool_call(ctx, tool.slug, arguments, result.output, "", result.latency_ms)
    ctx.step.latency_ms = (ctx.step.latency_ms or 0) + result.latency_ms
    return result.output


def idempotency_key(ctx: StepContext, tool: Tool, arguments: Any) -> str:
    """``<run id>:<step key>:<try>:<call>:<digest>``, sent as the Idempotency-Key header.

    ``try`` counts the step's recorded tries (1, then 2 after a retry), not deliveries: a worker
    that dies mid-call left no outcome, and the worker taking the step over sends the same call
    with the same key, so the receiver can drop the repeat. A retry follows a recorded failure and
    gets new keys, since receivers replay what they answered the first time, errors included.
    ``call`` numbers the tool calls of the attempt from 1 and ``digest`` (16 hex digits of
    SHA-256 over the tool and its arguments) tells apart different calls an agent makes at the
    same position after a takeover."""
    if ctx.try_number is None:
        ctx.try_number = 1 + ctx.step.events.filter(type=EventType.STEP_RETRYING).count()
    ctx.tool_calls += 1
    content = json.dumps([tool.pk, arguments], sort_keys=True, default=str).encode()
    digest = hashlib.sha256(content).hexdigest()[:16]
    return f"{ctx.run.pk}:{ctx.step.key}:{ctx.try_number}:{ctx.tool_calls}:{digest}"


def project_tool(ctx: StepContext, slug: str) -> Tool:
    tool = Tool.objects.select_related("credential").filter(project_id=ctx.run.project_id, slug=slug).first()
    if tool is None:
        raise StepFailed(f"Tool {slug!r} no longer exists.", permanent=True, kind="MissingTool")
    return tool
