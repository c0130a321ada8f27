"""What a run would cost before it starts: the worst case, the expected cost and duration, the
limits it would touch, and whether it would be admitted now. Nothing here writes a row.

**Worst case** (per step, then summed): every provider call the step can make, each with its
input counted as the engine's reservation counts it (every byte of system prompt, rendered prompt
and tool specs a token: no tokenizer makes more) plus the agent's ``max_tokens`` of output (or
``SPARKOPS_DEFAULT_MAX_OUTPUT_TOKENS``), an agent with tools making every round its
``max_tool_iterations`` allow, each round's answer and tool results added to the next call's
input; priced with the price in force now. A prompt that reads an earlier step's output counts
that output at its own worst case (an agent's: its output cap; a tool's: TOOL_OUTPUT_BYTES, an
assumption the estimate states). A step that fails and is retried may spend again: retries are
not in the worst case. A model with no price is named, and the total has no dollar figure.

**Expected**: per step, the median (p50) and p95 of the cost and duration of this workflow
version's recent executions of that step on the same model (the last HISTORY_RUNS, reused steps
left out); a step with no such history counts at its worst case. The run's duration is the
longest chain of steps through the graph. No history at all: no expected figures, the worst case
alone.
"""

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from jinja2 import TemplateError

from agents.models import Agent
from agents.selectors import price_in_force
from policies import kinds as policy_kinds
from policies.choices import PolicyKind
from policies.exceptions import PolicyRefused
from policies.kinds.base import Call
from policies.money import config_usd
from policies.selectors import budget_covers, budget_status, policies_for
from projects.services import project_require_startable
from sparkops.lib.errors import Refused
from workflows import dag, templating, validation
from workflows.models import WorkflowVersion

from . import services
from .choices import StepStatus
from .engine import admission
from .models import RunStep

#: Executions of a step read for its expected figures, newest first.
HISTORY_RUNS = 50
#: What a prompt counts for an earlier tool step's output it reads (tools bring no output cap).
TOOL_OUTPUT_BYTES = 4096
#: What a prompt counts for an earlier condition's or approval's output it reads.
SMALL_OUTPUT_BYTES = 200
MICRO = Decimal("0.000001")
#: Kinds whose time is a person's, not the run's: no expected duration is read for them.
UNTIMED = frozenset({"approval"})


def money(value: Decimal | None) -> str | None:
    return None if value is None else str(value.quantize(MICRO, rounding=ROUND_CEILING))


def percentile(values: list, share: float):
    """Nearest-rank percentile of a non-empty list (p50 of [1, 2, 3, 4] is 2)."""
    ordered = sorted(values)
    return ordered[max(math.ceil(share * len(ordered)) - 1, 0)]


@dataclass
class StepEstimate:
    key: str
    kind: str
    agent: Agent | None = None
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    worst_usd: Decimal | None = Decimal(0)
    price_id: int | None = None
    expected: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def model_name(self) -> str:
        return f"{self.agent.provider}/{self.agent.model}" if self.agent else ""

    @property
    def unpriced(self) -> bool:
        return self.calls > 0 and self.worst_usd is None

    @property
    def output_cap(self) -> int:
        """The most this step's output can weigh in a later prompt, in tokens (bytes)."""
        if self.kind == "agent" and self.agent is not None:
            return max_output_tokens(self.agent)
        return TOOL_OUTPUT_BYTES if self.kind == "tool" else SMALL_OUTPUT_BYTES

    def as_dict(self) -> dict:
        agent = self.agent
        return {
            "key": self.key,
            "kind": self.kind,
            "agent": agent.slug if agent else None,
            "provider": agent.provider if agent else "",
            "model": agent.model if agent else "",
            "price_id": self.price_id,
            "calls": self.calls,
            "worst_case": {
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "cost_usd": money(self.worst_usd),
                "unpriced": self.unpriced,
            },
            "expected": self.expected,
            "notes": self.notes,
        }


def max_output_tokens(agent: Agent) -> int:
    return int(agent.parameters.get("max_tokens") or settings.SPARKOPS_DEFAULT_MAX_OUTPUT_TOKENS)


# ------------------------------------------------------------------------------
# The worst case of one step
# ------------------------------------------------------------------------------
def _agent_for(project_id, spec: dict, override: dict) -> Agent | None:
    slug = override.get("agent") or spec["agent"]
    agent = Agent.objects.filter(project_id=project_id, slug=slug).prefetch_related("tools").first()
    if agent is not None and override.get("model"):
        agent.model = override["model"]  # as the engine runs it; never saved
    return agent


def _prompt_bytes(spec: dict, inputs: dict, outputs: dict[str, Any], caps: dict[str, int]) -> int:
    """The rendered prompt's bytes, each earlier output it reads at its known value or its cap."""
    stand_ins = {key: "x" * cap for key, cap in caps.items()} | outputs
    try:
        return len(templating.render(spec["prompt"], inputs=inputs, steps=stand_ins).encode())
    except (TemplateError, TypeError, ValueError):
        # A template that computes with an output cannot be shown a stand-in: count its source
        # and every output it names at its cap.
        read = [ref.path[0] for ref in templating.references(templating.parse(spec["prompt"])) if ref.root == "steps"]
        return len(spec["prompt"].encode()) + sum(caps.get(key, 0) for key in read if key)


def agent_worst_case(estimate: StepEstimate, spec: dict, prompt_bytes: int) -> None:
    agent = estimate.agent
    tools = [t for t in agent.tools.all() if t.enabled]
    specs = json.dumps([[t.slug, t.description or t.name, t.input_schema or {"type": "object"}] for t in tools])
    # The engine's estimate_call: system prompt, messages as JSON (a string's quotes included), tools.
    first = len(agent.system_prompt.encode()) + prompt_bytes + len(specs.encode()) + 16
    out = max_output_tokens(agent)
    estimate.calls = agent.max_tool_iterations + 1 if tools else 1
    # Each further round adds the model's answer and one round of tool results to the input.
    rounds = range(estimate.calls)
    estimate.input_tokens = sum(first + i * (out + TOOL_OUTPUT_BYTES) for i in rounds)
    estimate.output_tokens = out * estimate.calls
    price = price_in_force(provider=agent.provider, model=agent.model)
    estimate.price_id = price.pk if price else None
    estimate.worst_usd = price.cost(estimate.input_tokens, estimate.output_tokens) if price else None
    if price is None:
        estimate.notes.append(f"Model {estimate.model_name} has no price: its cost is unknown, not $0.")
    if "max_tokens" not in agent.parameters:
        estimate.notes.append(
            f"The agent sets no max_tokens: {out} output tokens are assumed per call (and sent when a "
            "budget or ceiling covers it)."
        )


# ------------------------------------------------------------------------------
# Expected: this version's history
# ------------------------------------------------------------------------------
def _history(version: WorkflowVersion, estimate: StepEstimate) -> dict | None:
    done = RunStep.objects.filter(
        run__workflow_version=version,
        key=estimate.key,
        status=StepStatus.SUCCEEDED,
        reused_from__isnull=True,
        started_at__isnull=False,
        finished_at__isnull=False,
    )
    if estimate.agent is not None:
        done = done.filter(provider=estimate.agent.provider, model=estimate.agent.model)
    rows = list(done.order_by("-finished_at").values_list("cost_usd", "started_at", "finished_at")[:HISTORY_RUNS])
    if not rows:
        return None
    costs = [row[0] for row in rows]
    durations = [(row[2] - row[1]).total_seconds() * 1000 for row in rows]
    return {
        "runs": len(rows),
        "cost_usd_p50": money(percentile(costs, 0.5)),
        "cost_usd_p95": money(percentile(costs, 0.95)),
        "duration_ms_p50": round(percentile(durations, 0.5)),
        "duration_ms_p95": round(percentile(durations, 0.95)),
    }


def _longest_chain(definition: dict, durations: dict[str, float]) -> float:
    deps = dag.dependencies(definition)
    finish: dict[str, float] = {}
    for key in dag.topological_order(definition):
        finish[key] = max((finish[d] for d in deps[key]), default=0) + durations.get(key, 0)
    return max(finish.values(), default=0)


def expected_total(definition: dict, steps: list[StepEstimate]) -> dict | None:
    known = [step for step in steps if step.expected]
    if not known:
        return None
    totals = {}
    for share in ("p50", "p95"):
        cost = Decimal(0)
        for step in steps:
            if step.expected:
                cost += Decimal(step.expected[f"cost_usd_{share}"])
            elif step.worst_usd is not None:
                cost += step.worst_usd
        totals[f"cost_usd_{share}"] = money(cost)
    for share in ("p50", "p95"):
        durations = {s.key: s.expected[f"duration_ms_{share}"] for s in known}
        totals[f"duration_ms_{share}"] = round(_longest_chain(definition, durations))
    totals["history_runs"] = min(step.expected["runs"] for step in known)
    timed = [step for step in steps if step.kind not in UNTIMED]
    totals["basis"] = "history" if len(known) == len(timed) else "history and worst case"
    return totals


# ------------------------------------------------------------------------------
# Limits: budgets, run ceilings, model allow-lists
# ------------------------------------------------------------------------------
def covered_steps(policy, steps: Iterable[StepEstimate], workflow_slug: str) -> list[StepEstimate]:
    return [
        s
        for s in steps
        if s.calls
        and budget_covers(
            policy.config,
            agent_slug=s.agent.slug,
            provider=s.agent.provider,
            model=s.agent.model,
            workflow_slug=workflow_slug,
        )
    ]


def step_sums(steps: list[StepEstimate]) -> tuple[Decimal | None, Decimal | None, list[str]]:
    """(worst USD, expected p50 USD, unpriced models) of these steps; USD None when unknown."""
    unpriced = sorted({s.model_name for s in steps if s.unpriced})
    worst = None if unpriced else sum((s.worst_usd for s in steps), Decimal(0))
    expected = Decimal(0)
    for s in steps:
        if s.expected:
            expected += Decimal(s.expected["cost_usd_p50"])
        elif s.worst_usd is None:
            return worst, None, unpriced
        else:
            expected += s.worst_usd
    return worst, expected, unpriced


def budget_touch(policy, project_id, steps: list[StepEstimate], workflow_slug: str) -> dict | None:
    covered = covered_steps(policy, steps, workflow_slug)
    at_admission = (
        not (policy.config.get("agent") or policy.config.get("model"))
        and policy.config.get("workflow", workflow_slug) == workflow_slug
    )
    if not covered and not at_admission:
        return None
    status = budget_status(policy, project_id)
    worst, expected, unpriced = step_sums(covered)
    touch = _limit(policy, worst, expected, status.remaining, unpriced)
    touch.update(
        amount_usd=money(status.amount),
        remaining_usd=money(status.remaining),
        window_end=status.window_end.isoformat(),
        steps=[s.key for s in covered],
    )
    return touch


def _limit(policy, worst, expected, room, unpriced) -> dict:
    notes = [f"Model {m} has no price: {policy.name!r} blocks its calls." for m in unpriced if policy.action == "block"]
    return {
        "policy": policy.pk,
        "name": policy.name,
        "kind": policy.kind,
        "action": policy.action,
        "worst_case_usd": money(worst),
        "expected_usd": money(expected),
        "would_exceed_worst_case": None if worst is None or room is None else worst > room,
        "would_exceed_expected": None if expected is None or room is None else expected > room,
        "unpriced_models": unpriced,
        "notes": notes,
    }


def ceiling_touch(policy, steps: list[StepEstimate]) -> dict:
    worst, expected, unpriced = step_sums([s for s in steps if s.calls])
    max_usd, max_tokens = config_usd(policy.config, "max_usd"), policy.config.get("max_tokens")
    touch = _limit(policy, worst, expected, max_usd, unpriced if max_usd is not None else [])
    tokens = sum(s.input_tokens + s.output_tokens for s in steps)
    touch.update(
        max_usd=money(max_usd),
        max_tokens=max_tokens,
        worst_case_tokens=tokens,
        would_exceed_tokens=None if max_tokens is None else tokens > max_tokens,
    )
    return touch


def model_refusals(project_id, estimate: StepEstimate) -> list[str]:
    """Why the model allow-lists would refuse this step's calls (a blocking list fails the step)."""
    agent = estimate.agent
    call = Call(project_id=project_id, run_id=None, step_id=0, attempt=0, agent=agent)
    call.provider, call.model = agent.provider, agent.model
    reasons = []
    for policy in policies_for(project_id, [PolicyKind.MODEL_ALLOWLIST]):
        if objection := policy_kinds.get(policy.kind).judge(policy, call):
            reasons.append(f"{objection.reason} ({policy.action})")
    return reasons


# ------------------------------------------------------------------------------
# Admission, asked for real and rolled back
# ------------------------------------------------------------------------------
def admission_verdict(version: WorkflowVersion, api_key=None) -> dict:
    """What admission (runs/engine/admission.py and the policies) would answer now, and whether a
    concurrency limit would hold the run in the queue. Asked in a transaction that is rolled back,
    recording nothing: no run asked."""
    workflow = version.workflow
    verdict: dict = {"admitted": True, "status_code": None, "reason": "", "policy": None, "warnings": []}
    verdict["waits_for_slot"] = None
    try:
        project_require_startable(project_id=workflow.project_id)
        with transaction.atomic():
            warnings = admission.admit(workflow=workflow, api_key=api_key)
            wait = admission.slot_wait(workflow=workflow, definition=version.definition)
            transaction.set_rollback(True)  # admission locks limits; release them at once
        verdict["warnings"] = [{"policy": w.policy.pk, "name": w.policy.name, "reason": w.reason} for w in warnings]
        if wait is not None:
            verdict["waits_for_slot"] = {"policy": wait[0].pk, "name": wait[0].name, "reason": wait[1]}
    except PolicyRefused as refusal:
        policy = refusal.policy
        verdict.update(admitted=False, status_code=refusal.status_code, reason=refusal.reason)
        verdict["policy"] = {"id": policy.pk, "name": policy.name, "kind": policy.kind, "action": policy.action}
    except Refused as refusal:
        verdict.update(admitted=False, status_code=refusal.status_code, reason=str(refusal))
    return verdict


# ------------------------------------------------------------------------------
# The whole estimate
# ------------------------------------------------------------------------------
@dataclass
class Question:
    """What to estimate: a version with inputs, in a project; for a replay, only the steps that
    run again (``only``), with the outputs of the reused ones known."""

    version: WorkflowVersion
    inputs: dict
    overrides: dict = field(default_factory=dict)
    only: set[str] | None = None
    outputs: dict[str, Any] = field(default_factory=dict)


def step_estimates(question: Question) -> list[StepEstimate]:
    version = question.version
    project_id = version.workflow.project_id
    definition = version.definition
    specs = {spec["key"]: spec for spec in definition["steps"]}
    caps: dict[str, int] = {}
    found: dict[str, StepEstimate] = {}
    for key in dag.topological_order(definition):
        estimate = _one_step(project_id, specs[key], question, caps)
        caps[key] = estimate.output_cap
        found[key] = estimate
    wanted = [spec["key"] for spec in definition["steps"] if question.only is None or spec["key"] in question.only]
    return [found[key] for key in wanted]


def _one_step(project_id, spec: dict, question: Question, caps: dict[str, int]) -> StepEstimate:
    estimate = StepEstimate(spec["key"], spec["kind"])
    if question.only is not None and spec["key"] not in question.only:
        return estimate
    if spec["kind"] == "agent":
        estimate.agent = _agent_for(project_id, spec, question.overrides.get(spec["key"], {}))
        if estimate.agent is None or not estimate.agent.is_active:
            estimate.notes.append(f"Agent {spec['agent']!r} is missing or disabled: the step would fail.")
            estimate.agent = None
            return estimate
        prompt = _prompt_bytes(spec, question.inputs, question.outputs, caps)
        agent_worst_case(estimate, spec, prompt)
        estimate.notes.extend(model_refusals(project_id, estimate))
    if spec["kind"] not in UNTIMED:
        estimate.expected = _history(question.version, estimate)
    return estimate


def estimate_run(question: Question, *, api_key=None) -> dict:
    version = question.version
    workflow = version.workflow
    steps = step_estimates(question)
    worst, _, unpriced = step_sums(steps)
    priced = sum((s.worst_usd for s in steps if s.worst_usd is not None), Decimal(0))
    limits = _limits(workflow, steps)
    return {
        "workflow": str(workflow.pk),
        "workflow_version": version.pk,
        "version": version.number,
        "steps": [s.as_dict() for s in steps],
        "worst_case": {
            "cost_usd": money(worst),
            "priced_cost_usd": money(priced),
            "tokens": sum(s.input_tokens + s.output_tokens for s in steps),
            "calls": sum(s.calls for s in steps),
            "unpriced_models": unpriced,
        },
        "expected": expected_total(version.definition, steps),
        "limits": limits,
        "admission": admission_verdict(version, api_key),
        "assumptions": [
            f"A prompt reading a tool step's output counts it as {TOOL_OUTPUT_BYTES} bytes; each tool-loop "
            f"round's tool results as {TOOL_OUTPUT_BYTES} bytes.",
            "Retries after a failure are not included: each may spend again.",
        ],
    }


def _limits(workflow, steps: list[StepEstimate]) -> list[dict]:
    found = []
    kinds = [PolicyKind.BUDGET, PolicyKind.RUN_CEILING]
    for policy in policies_for(workflow.project_id, kinds):
        if policy.kind == PolicyKind.RUN_CEILING:
            found.append(ceiling_touch(policy, steps))
        elif touch := budget_touch(policy, workflow.project_id, steps, workflow.slug):
            found.append(touch)
    return found


def estimate_start(
    *, workflow, version: WorkflowVersion | None = None, inputs: dict | None = None, api_key=None
) -> dict:
    """The estimate of what run_start would start with these arguments, checked as it checks them
    (a bad input is the same 400); nothing is written."""
    version = services._pinned_version(workflow, version)
    inputs = {} if inputs is None else inputs
    if problems := validation.input_errors(version.input_schema, inputs):
        raise ValidationError({"inputs": problems})
    return estimate_run(Question(version=version, inputs=inputs), api_key=api_key)
