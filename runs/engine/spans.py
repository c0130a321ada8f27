"""The spans of a run, through the OpenTelemetry API only: with no SDK configured (telemetry sets
one up when an exporter is named) every call here is a no-op.

One trace per run, on any worker, with nothing stored: the trace id is the run's UUID, and every
step's span is a child of the run's span, whose id is derived from the UUID too (telemetry writes
that span when the run finishes). A step's span links to the Celery task span that carried it.
Under a step's span, one span per LLM call and per tool call, with the OpenTelemetry GenAI
semantic conventions and our own ``sparkops.*`` attributes.
"""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, StatusCode, TraceFlags

from .context import StepCancelled, StepFailed, StepHeld

tracer = trace.get_tracer("sparkops.runs")

_LOW_64 = (1 << 64) - 1


def run_span_context(run_id) -> SpanContext:
    """The run's own span: trace id from the run's UUID, span id from its low 64 bits."""
    value = uuid.UUID(str(run_id)).int
    return SpanContext(
        trace_id=value, span_id=(value & _LOW_64) or 1, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )


def _off() -> bool:
    """No SDK was set up in this process (the default): every span would be a no-op, so none is
    even started, not to spend microseconds per step building attributes for nothing."""
    return isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def _ids(run, step) -> dict:
    return {
        "sparkops.run.id": str(run.pk),
        "sparkops.project.id": str(run.project_id),
        "sparkops.workflow.id": str(run.workflow_id),
        "sparkops.step.key": step.key,
        "sparkops.step.attempt": step.attempt,
    }


@contextmanager
def step_span(step) -> Iterator[Span]:
    """One attempt of a step, parented to its run's span whatever trace carried the message."""
    if _off():
        yield trace.INVALID_SPAN
        return
    parent = trace.set_span_in_context(NonRecordingSpan(run_span_context(step.run_id)))
    carrier = trace.get_current_span().get_span_context()
    attributes = {**_ids(step.run, step), "sparkops.step.id": step.pk, "sparkops.step.kind": step.kind}
    if step.kind == "agent":
        attributes["gen_ai.operation.name"] = "invoke_agent"
    links = [Link(carrier)] if carrier.is_valid else None
    with _span(f"step {step.key}", SpanKind.INTERNAL, attributes, context=parent, links=links) as span:
        yield span


@contextmanager
def llm_span(ctx, agent, iteration: int) -> Iterator[Span]:
    if _off():
        yield trace.INVALID_SPAN
        return
    attributes = {
        **_ids(ctx.run, ctx.step),
        "gen_ai.operation.name": "chat",
        "gen_ai.system": agent.provider,
        "gen_ai.provider.name": agent.provider,
        "gen_ai.request.model": agent.model,
        "gen_ai.agent.name": agent.slug,
        "sparkops.llm.iteration": iteration,
    }
    for name in ("max_tokens", "temperature", "top_p"):
        if isinstance(agent.parameters.get(name), int | float):
            attributes[f"gen_ai.request.{name}"] = agent.parameters[name]
    with _span(f"chat {agent.model}", SpanKind.CLIENT, attributes) as span:
        yield span


@contextmanager
def tool_span(ctx, tool_name: str) -> Iterator[Span]:
    if _off():
        yield trace.INVALID_SPAN
        return
    attributes = {**_ids(ctx.run, ctx.step), "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool_name}
    with _span(f"execute_tool {tool_name}", SpanKind.INTERNAL, attributes) as span:
        yield span


def record_usage(result, cost: Decimal | None) -> None:
    """On the current LLM call's span: what the call used and cost (``result``: the provider's
    CompletionResult)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(
            {
                "gen_ai.response.model": result.model or "",
                "gen_ai.response.finish_reasons": [result.stop_reason] if result.stop_reason else [],
                "gen_ai.usage.input_tokens": result.input_tokens,
                "gen_ai.usage.output_tokens": result.output_tokens,
                "sparkops.cost_usd": float(cost) if cost is not None else 0.0,
                "sparkops.priced": cost is not None,
                "sparkops.llm.tool_calls": len(result.tool_calls),
            }
        )


def record_verdict(verdict) -> None:
    """On the current call's span: what the project's policies decided about the call."""
    span = trace.get_current_span()
    if span.is_recording() and verdict.decisions:
        span.set_attributes(
            {
                "sparkops.policy.outcome": verdict.outcome or "allowed",
                "sparkops.policy.decisions": [f"{d.policy_id}:{d.outcome}" for d in verdict.decisions],
            }
        )


@contextmanager
def _span(name: str, kind: SpanKind, attributes: dict, **options) -> Iterator[Span]:
    """A span that tells a held or cancelled attempt (not errors) from a failed one."""
    with tracer.start_as_current_span(
        name, kind=kind, attributes=attributes, record_exception=False, set_status_on_exception=False, **options
    ) as span:
        try:
            yield span
        except StepHeld:
            span.set_attribute("sparkops.outcome", "waiting_approval")
            raise
        except StepCancelled:
            span.set_attribute("sparkops.outcome", "cancelled")
            raise
        except StepFailed as failure:
            span.set_attributes({"sparkops.outcome": "failed", "error.type": failure.kind})
            span.set_status(StatusCode.ERROR, str(failure))
            raise
        except BaseException as exc:
            span.record_exception(exc)
            span.set_attributes({"sparkops.outcome": "error", "error.type": type(exc).__qualname__})
            span.set_status(StatusCode.ERROR, str(exc))
            raise
