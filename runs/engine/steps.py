"""What each step kind does. Functions here call adapters and record each call's tokens and
cost as it happens; they never change a step's status (core does, through transitions)."""

import hashlib
import json
import operator
import time
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from jinja2 import TemplateError

from agents import providers, tools
from agents import services as agent_services
from agents.models import Agent, ModelPrice, Tool
from agents.providers.base import CompletionRequest, Credential, Message, ToolSpec
from agents.selectors import cost_of_call, price_in_force
from policies import services as policy_services
from policies.choices import PolicyKind
from policies.selectors import policies_for
from workflows import dag, templating

from ..choices import EventType, RunStatus
from ..models import Run, RunStep
from .durability import durably
from .transitions import emit_many

UNREAD = object()  # record_llm_call: the call's price was not read yet


class StepFailed(Exception):
    """The attempt failed. ``permanent`` ones are not retried."""

    def __init__(self, message: str, *, permanent: bool, kind: str = "StepFailed", retry_after: float | None = None):
        super().__init__(message)
        self.permanent, self.kind, self.retry_after = permanent, kind, retry_after

    def as_error(self) -> dict:
        return {"type": self.kind, "message": str(self), "permanent": self.permanent}


class StepTimedOut(StepFailed):
    """The step's ``timeout_seconds`` ran out: before a call (which is then not made) or during
    one (which was cut at the step's deadline)."""

    def __init__(self, message: str = "The step ran out of time."):
        super().__init__(message, permanent=False, kind="Timeout")


class StepCancelled(Exception):
    """The run is being cancelled; the step stops at this check."""


class StepHeld(Exception):
    """A policy wants a human decision before this call; the step waits for approval and runs
    again from its start once approved."""

    def __init__(self, hit: policy_services.Hit, arguments: Any = None):
        super().__init__(hit.reason)
        self.hit, self.arguments = hit, arguments

    def as_hold(self, previous: dict) -> dict:
        """The step's hold: what waits for a decision (with the tool's arguments, so the approver
        sees the call), numbered per step, and what earlier decisions of this step granted."""
        policy = self.hit.policy
        hold = {
            "round": previous.get("round", 0) + 1,
            "key": self.hit.key,
            "policy": policy.pk if policy else None,
            "policy_name": policy.name if policy else "",
            "reason": self.hit.reason,
            "role": self.hit.role,
            "staff_only": self.hit.staff_only,
            "granted": previous.get("granted", []),
        }
        if self.arguments is not None:
            hold["arguments"] = self.arguments
        return hold


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
    #: Ledger entries to settle or write with the next flush.
    spend: list[dict] = field(default_factory=list)
    #: The project's call-level policies, read once per attempt.
    policies: list | None = None
    #: Tool calls started in this attempt, and which try of the step this is (read on first use):
    #: both go into each call's idempotency key.
    tool_calls: int = 0
    try_number: int | None = None

    def emit(self, type_: str, payload: dict) -> None:
        self.pending.append((type_, self.step, payload))
        self.flush()

    def flush(self) -> None:
        """Write what is held back, accounting and events, in one transaction; through a dropped
        connection too, for the calls it records have happened."""
        durably(self.write, until=self.step.lease_expires_at)
        self.forget()

    def write(self, *outcome: tuple) -> None:
        """Write what is held back, then ``outcome`` events, in one transaction. Nothing is
        forgotten here: a caller whose transaction fails tries again with all of it."""
        with transaction.atomic(savepoint=False):  # no savepoint when nested: nothing here is caught
            if self.totals:
                increments = {name: F(name) + value for name, value in self.totals.items()}
                # The run's row before the step's, the order advance and claim lock them in.
                Run.objects.filter(pk=self.run.pk).update(**increments)
                RunStep.objects.filter(pk=self.step.pk).update(**increments)
            for entry in self.spend:
                policy_services.spend_settle(**entry)
            emit_many(self.run.pk, [*self.pending, *outcome])

    def forget(self) -> None:
        """What was held back is written (committed)."""
        self.pending, self.totals, self.spend = [], {}, []

    def render(self, source: str) -> str:
        try:
            return templating.render(source, inputs=self.run.inputs, steps=self.outputs)
        except TemplateError as exc:
            raise StepFailed(f"Template error: {exc}", permanent=True, kind="TemplateError") from exc

    def remaining(self) -> float:
        """Seconds left for the next call, which is bounded by them; none left: StepTimedOut."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise StepTimedOut()
        return left

    def timed_out(self) -> bool:
        return time.monotonic() >= self.deadline

    def check_cancel(self) -> None:
        cancelling = Run.objects.filter(pk=self.run.pk, status=RunStatus.CANCELLING).exists
        if durably(cancelling, until=self.step.lease_expires_at):
            raise StepCancelled()


# ------------------------------------------------------------------------------
# Accounting
# ------------------------------------------------------------------------------
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
        read_price = partial(
            cost_of_call,
            provider=agent.provider,
            model=agent.model,
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
        )
        cost, price = durably(read_price, until=ctx.step.lease_expires_at)
    else:
        cost = price.cost(result.input_tokens, result.output_tokens) if price else None
    ctx.spend.append(
        {
            "call": call or _call_facts(ctx, agent=agent),
            "entry_id": entry_id,
            "input_tokens": result.input_tokens,
            "output_tokens": result.output_tokens,
            "cost": cost,
            "price": price,
        }
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
# Policies before each call
# ------------------------------------------------------------------------------
def _call_facts(ctx: StepContext, **fields) -> policy_services.Call:
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


def estimate_call(agent: Agent, request: CompletionRequest) -> tuple[Decimal | None, int, ModelPrice | None]:
    """The most a call can cost: every byte of the prompt a token (no tokenizer makes more), and
    the agent's max_tokens (or the provider default) of output; with the price it used. The cost
    is None when the model is unpriced."""
    text = request.system_prompt + json.dumps(
        [[m.content, [c.arguments for c in m.tool_calls or []]] for m in request.messages], default=str
    )
    text += json.dumps([[t.name, t.description, t.input_schema] for t in request.tools])
    input_tokens = len(text.encode())
    output_tokens = int(request.parameters.get("max_tokens") or settings.SPARKOPS_DEFAULT_MAX_OUTPUT_TOKENS)
    price = price_in_force(provider=agent.provider, model=agent.model)
    cost = price.cost(input_tokens, output_tokens) if price else None
    return cost, input_tokens + output_tokens, price


def call_policies(ctx: StepContext) -> list:
    if ctx.policies is None:
        ctx.policies = policies_for(ctx.run.project_id, policy_services.CALL_KINDS)
    return ctx.policies


def ask_policies(ctx: StepContext, call: policy_services.Call, arguments: Any = None) -> policy_services.Verdict:
    """Judge the call; a block fails the attempt for good, an approval parks the step."""
    if not call_policies(ctx) and not (call.tool is not None and call.tool.requires_approval):
        return policy_services.Verdict()
    call.granted = frozenset((ctx.step.hold or {}).get("granted", []))
    verdict = policy_services.call_verdict(call, ctx.policies)
    for decision in verdict.decisions:
        ctx.pending.append((EventType.POLICY_DECISION, ctx.step, _decision_payload(ctx, decision)))
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
    ask_policies(ctx, _call_facts(ctx, tool=tool), arguments)
    # No call may outlive the step: the lease is the step's timeout plus a margin, and a call
    # past it would be taken over by another worker and sent twice.
    limits = tools.CallLimits(timeout=ctx.remaining(), idempotency_key=idempotency_key(ctx, tool, arguments))
    started = time.monotonic()
    try:
        result = agent_services.tool_execute(tool=tool, arguments=arguments, limits=limits)
    except ValidationError as exc:
        message = "; ".join(exc.message_dict.get("input", exc.messages))
        _record_tool_call(ctx, tool.slug, arguments, None, message, (time.monotonic() - started) * 1000)
        raise StepFailed(f"Invalid input for {tool.slug}: {message}", permanent=True, kind="InvalidToolInput") from exc
    except tools.ToolError as exc:
        _record_tool_call(ctx, tool.slug, arguments, None, str(exc), (time.monotonic() - started) * 1000)
        if exc.timed_out and ctx.timed_out():
            raise StepTimedOut(f"The step ran out of time calling {tool.slug}: {exc}") from exc
        raise StepFailed(str(exc), permanent=exc.permanent, kind="ToolError", retry_after=exc.retry_after) from exc
    _record_tool_call(ctx, tool.slug, arguments, result.output, "", result.latency_ms)
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
        estimate, tokens, price = estimate_call(agent, request) if call_policies(ctx) else (None, 0, UNREAD)
        call = _call_facts(ctx, agent=agent, estimate_usd=estimate, estimate_tokens=tokens)
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


def _capped(ctx: StepContext, agent: Agent) -> dict:
    """Under a budget or a run ceiling, a call must not outgrow its reservation: an agent with no
    max_tokens is sent the output cap its estimate assumed."""
    if "max_tokens" in agent.parameters:
        return agent.parameters
    spend_kinds = {PolicyKind.BUDGET, PolicyKind.RUN_CEILING}
    if not any(policy.kind in spend_kinds for policy in call_policies(ctx)):
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
            _record_tool_call(ctx, call.name, call.arguments, None, content["error"], 0)
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
