"""Replay a finished run from one of its steps, with edited inputs and per-step overrides of an
agent step's agent or model; or preview it (``dry_run``): which steps are reused, which run again
and why (runs/reuse.py), and what the part that runs again may cost (runs/estimates.py)."""

from typing import Any

from django.core.exceptions import ValidationError

from accounts.models import User
from agents.models import Agent
from policies.choices import PolicyAction
from projects.services import project_require_writable
from workflows import validation

from . import estimates
from .choices import RUN_TERMINAL, StepStatus, Trigger
from .engine.transitions import require_run_status
from .models import Run
from .reuse import StepPlan, reuse_plan
from .services import Child, _replay, admit_child, request_fingerprint


def _agent_error(run: Run, spec: dict, change: dict) -> tuple[Agent | None, str]:
    agent = Agent.objects.filter(project_id=run.project_id, slug=change.get("agent") or spec["agent"]).first()
    if agent is None or not agent.is_active:
        return None, f"The project has no active agent {change.get('agent') or spec['agent']!r}."
    return agent, ""


def _model_error(run: Run, agent: Agent, model: str) -> tuple[str, str]:
    """(the model, or the error): a model of the agent's provider the blocking allow-lists admit."""
    provider, _, name = model.rpartition("/")
    if provider and provider != agent.provider:
        return "", f"Agent {agent.slug!r} speaks {agent.provider}; override the agent to use {provider}."
    agent.model = name
    estimate = estimates.StepEstimate("", "agent", agent=agent)
    refusals = [r for r in estimates.model_refusals(run.project_id, estimate) if r.endswith(f"({PolicyAction.BLOCK})")]
    return (name, "") if not refusals else ("", refusals[0])


def clean_overrides(run: Run, overrides: dict[str, Any]) -> dict[str, dict]:
    """``{step key: {"agent"?: slug, "model"?: name}}`` checked against the run's version and the
    project: an agent step, an active agent of the project, a model the policies allow."""
    specs = {spec["key"]: spec for spec in run.workflow_version.definition["steps"]}
    cleaned, errors = {}, {}
    for key, change in overrides.items():
        spec = specs.get(key)
        if spec is None or spec["kind"] != "agent":
            errors[key] = f"{key!r} is not an agent step of this run's workflow version."
            continue
        agent, problem = _agent_error(run, spec, change)
        if agent is not None and change.get("model"):
            change["model"], problem = _model_error(run, agent, change["model"])
        if problem:
            errors[key] = problem
        cleaned[key] = {name: value for name, value in change.items() if value}
    if errors:
        raise ValidationError({"overrides": [f"{key}: {problem}" for key, problem in errors.items()]})
    return cleaned


def _checked(run: Run, from_step: str, inputs: dict | None, overrides: dict | None) -> tuple[dict, dict]:
    require_run_status(run, RUN_TERMINAL, "replay")
    project_require_writable(project_id=run.project_id)
    keys = [spec["key"] for spec in run.workflow_version.definition["steps"]]
    if from_step and from_step not in keys:
        raise ValidationError({"from_step": [f"The run's workflow version has no step {from_step!r}."]})
    inputs = run.inputs if inputs is None else inputs
    if problems := validation.input_errors(run.workflow_version.input_schema, inputs):
        raise ValidationError({"inputs": problems})
    return inputs, clean_overrides(run, dict(overrides or {}))


def replay_preview(*, run: Run, from_step: str = "", inputs: dict | None = None, overrides=None, api_key=None):
    """What run_replay would do, and what the steps that run again may cost; writes nothing."""
    inputs, overrides = _checked(run, from_step, inputs, overrides)
    plan = reuse_plan(run=run, inputs=inputs, from_step=from_step, overrides=overrides)
    return {
        "dry_run": True,
        "steps": [p.as_dict() for p in plan],
        "estimate": _rerun_estimate(run, plan, inputs, overrides, api_key),
    }


def _rerun_estimate(run: Run, plan: list[StepPlan], inputs: dict, overrides: dict, api_key) -> dict:
    outputs = {p.key: p.reused.output for p in plan if p.reuse and p.reused.status == StepStatus.SUCCEEDED}
    question = estimates.Question(
        version=run.workflow_version,
        inputs=inputs,
        overrides=overrides,
        only={p.key for p in plan if not p.reuse},
        outputs=outputs,
    )
    return estimates.estimate_run(question, api_key=api_key)


def run_replay(
    *,
    run: Run,
    from_step: str = "",
    inputs: dict | None = None,
    overrides: dict | None = None,
    user: User | None = None,
    api_key=None,
    idempotency_key: str = "",
) -> tuple[Run, bool]:
    """A new run of ``run``'s version (trigger ``replay``, ``parent`` set, ``from_step`` and
    ``overrides`` recorded) that reuses what reuse_plan allows and runs the rest, admitted like
    any new run. Returns (run, created), as run_start does for an idempotency key."""
    fingerprint = request_fingerprint(
        action="replay", parent=run.pk, from_step=from_step, inputs=inputs, overrides=overrides or {}
    )
    if existing := _replay(run.project_id, idempotency_key, fingerprint):
        return existing, False
    inputs, overrides = _checked(run, from_step, inputs, overrides)
    child = Child(
        trigger=Trigger.REPLAY,
        inputs=inputs,
        plan=reuse_plan(run=run, inputs=inputs, from_step=from_step, overrides=overrides),
        user=user,
        api_key=api_key,
        key={"idempotency_key": idempotency_key, "request_fingerprint": fingerprint if idempotency_key else ""},
        from_step=from_step,
        overrides=overrides,
    )
    return admit_child(run, child, fingerprint)
