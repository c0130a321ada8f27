"""An agent step: the conversation with the agent's model, with its tool-call loop."""

import json
from functools import partial
from typing import Any

from django.conf import settings

from agents import providers
from agents.models import Agent, Tool
from agents.providers.base import CompletionRequest, Credential, Message, ToolSpec
from policies import services as policy_services

from .. import spans
from ..calls import (
    UNREAD,
    ask_policies,
    call_facts,
    call_policies,
    call_tool,
    estimate_call,
    record_llm_call,
    record_tool_call,
)
from ..context import StepContext, StepFailed, StepTimedOut, save_input
from ..durability import durably
from .base import StepKind


def run(ctx: StepContext) -> str:
    # A replay may run this step with another agent of the project, or the same agent on another model.
    override = (ctx.run.overrides or {}).get(ctx.step.key, {})
    slug = override.get("agent") or ctx.spec["agent"]
    agent = ctx.catalog.agent(ctx.run.project_id, slug)  # a copy: the change of model below stays here
    if agent is None or not agent.is_active:
        raise StepFailed(f"Agent {slug!r} is missing or disabled.", permanent=True, kind="AgentUnavailable")
    if override.get("model"):
        agent.model = override["model"]  # never saved: the agent keeps its model for other runs
    prompt = ctx.render(ctx.spec["prompt"])
    save_input(ctx, {"agent": agent.slug, "prompt": prompt}, agent=agent, provider=agent.provider, model=agent.model)
    return _converse(ctx, agent, prompt)


def _converse(ctx: StepContext, agent: Agent, prompt: str) -> str:
    """The tool-call loop: ask, run the tools the model asks for, answer, up to the agent's limit."""
    provider = providers.get(agent.provider)
    allowed = {tool.slug: tool for tool in ctx.catalog.tools_of(agent) if tool.enabled}
    specs = [ToolSpec(t.slug, t.description or t.name, t.input_schema or {"type": "object"}) for t in allowed.values()]
    credential = agent.credential.as_provider_credential() if agent.credential else Credential()
    parameters = _capped(ctx, agent)
    messages = [Message("user", prompt)]
    for iteration in range(agent.max_tool_iterations + 1):
        if iteration:  # before the first call, execute() has just checked the run's status
            ctx.check_cancel()
        request = CompletionRequest(
            model=agent.model,
            messages=messages,
            system_prompt=agent.system_prompt,
            tools=specs,
            parameters=parameters,
            credential=credential,
            timeout=ctx.remaining(),
        )
        with spans.llm_span(ctx, agent, iteration):
            estimate, tokens, price = estimate_call(ctx, agent, request) if call_policies(ctx) else (None, 0, UNREAD)
            call = call_facts(ctx, agent=agent, estimate_usd=estimate, estimate_tokens=tokens)
            verdict = ask_policies(ctx, call)
            try:
                result = _complete(ctx, provider, request)
            except StepFailed:
                release = partial(policy_services.spend_release, entry_id=verdict.entry_id)
                durably(release, until=ctx.step.lease_expires_at)  # the failure is in hand: write it
                raise
            ctx.step.latency_ms = (ctx.step.latency_ms or 0) + result.latency_ms
            record_llm_call(
                ctx,
                agent=agent,
                result=result,
                iteration=iteration,
                final=not result.tool_calls,
                call=call,
                entry_id=verdict.entry_id,
                price=price,
            )
        if not result.tool_calls:
            # A call that returned after the cancel request is counted, not used: the success is
            # written only if the run is not being cancelled, read as the run is locked to write it.
            return result.text
        ctx.check_cancel()  # the same, before the tools it asked for are called
        if iteration == agent.max_tool_iterations:
            raise StepFailed(
                f"Still calling tools after {agent.max_tool_iterations} rounds.", permanent=True, kind="ToolLoopLimit"
            )
        messages.append(Message("assistant", result.text, tool_calls=result.tool_calls))
        messages.extend(_answer_tool_calls(ctx, allowed, result.tool_calls))
    raise AssertionError("unreachable")


def _capped(ctx: StepContext, agent: Agent) -> dict:
    """Under a budget or a run ceiling, a call must not outgrow its reservation: an agent with no
    max_tokens is sent the output cap its estimate assumed."""
    if "max_tokens" in agent.parameters:
        return agent.parameters
    if not policy_services.holds_spend(call_policies(ctx)):
        return agent.parameters
    return {**agent.parameters, "max_tokens": settings.SPARKOPS_DEFAULT_MAX_OUTPUT_TOKENS}


def _complete(ctx: StepContext, provider, request: CompletionRequest):
    try:
        return provider.complete(request)
    except providers.ProviderError as exc:
        if ctx.timed_out():  # cut at the step's deadline: the step's timeout, not the provider's
            raise StepTimedOut(f"The step ran out of time waiting for {request.model}: {exc}") from exc
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
            record_tool_call(ctx, call.name, call.arguments, None, content["error"], 0)
        else:
            content = _tool_answer(ctx, tool, call.arguments)
        answers.append(Message("tool", json.dumps(content, default=str), tool_call_id=call.id))
    return answers


def _tool_answer(ctx: StepContext, tool: Tool, arguments: dict) -> Any:
    try:
        return {"output": call_tool(ctx, tool, arguments)}
    except StepTimedOut:
        raise  # the step is out of time: nothing to tell the model
    except StepFailed as exc:
        return {"error": str(exc)}


KIND = StepKind("agent", run)
