"""Which steps of a finished run a new run of the same version may reuse (keep their outcome
instead of running again), and why. Retry and replay both follow this rule.

A step is reused only when nothing it read has changed:
- it succeeded in the run it comes from (or was skipped: a branch its condition ruled out);
- every step it waits for is reused too, so the outputs its templates read are the same ones;
- its own input, rendered with the new run's inputs and those outputs, is identical (as JSON) to
  the input it ran with; a skipped step ran with nothing, so only the previous rule applies to it;
- a replay does not start at it or at a step it depends on (``from_step``), and no override
  changes its agent or model.
Anything else runs again. Reading the rule in topological order decides every step in one pass.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError

from workflows import dag, templating
from workflows.definition import same_json

from .choices import StepStatus
from .engine.kinds.condition import operands
from .models import Run, RunStep

REUSABLE = frozenset({StepStatus.SUCCEEDED, StepStatus.SKIPPED})


@dataclass(frozen=True)
class StepPlan:
    key: str
    reused: RunStep | None  # the step whose outcome the new run keeps; None: it runs again
    reason: str

    @property
    def reuse(self) -> bool:
        return self.reused is not None

    def as_dict(self) -> dict:
        return {"key": self.key, "reuse": self.reuse, "reason": self.reason}


def descendants(deps: Mapping[str, list[str]], key: str) -> set[str]:
    """Every step that waits for ``key``, directly or through others."""
    waiting_on: dict[str, list[str]] = {k: [] for k in deps}
    for step, needed in deps.items():
        for other in needed:
            waiting_on[other].append(step)
    found, todo = set(), list(waiting_on.get(key, []))
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo.extend(waiting_on[current])
    return found


def reuse_plan(
    *, run: Run, inputs: dict, from_step: str = "", overrides: Mapping[str, Any] | None = None
) -> list[StepPlan]:
    """One StepPlan per step of ``run``'s version, in definition order."""
    definition = run.workflow_version.definition
    deps = dag.dependencies(definition)
    restart = {from_step} | descendants(deps, from_step) if from_step else set()
    previous = {step.key: step for step in run.steps.all()}
    specs = {spec["key"]: spec for spec in definition["steps"]}
    decided: dict[str, StepPlan] = {}
    outputs: dict[str, Any] = {}  # of the reused steps that succeeded: what later templates read
    for key in dag.topological_order(definition):
        if key in restart:
            decided[key] = StepPlan(key, None, f"replayed from {from_step!r}")
        elif key in (overrides or {}):
            changed = " and ".join(sorted((overrides or {})[key]))
            decided[key] = StepPlan(key, None, f"its {changed} is overridden")
        else:
            decided[key] = _judge(specs[key], previous.get(key), [decided[k] for k in deps[key]], inputs, outputs)
        if decided[key].reuse and previous[key].status == StepStatus.SUCCEEDED:
            outputs[key] = previous[key].output
    return [decided[spec["key"]] for spec in definition["steps"]]


def _judge(spec: dict, old: RunStep | None, needed: list[StepPlan], inputs: dict, outputs: dict) -> StepPlan:
    key = spec["key"]
    if old is None or old.status not in REUSABLE:
        return StepPlan(key, None, f"it was {old.status if old else 'missing'} in the run replayed")
    rerun = next((plan.key for plan in needed if not plan.reuse), None)
    if rerun is not None:
        return StepPlan(key, None, f"it depends on {rerun!r}, which runs again")
    if old.status == StepStatus.SKIPPED:
        return StepPlan(key, old, "skipped before, and what ruled it out is reused")
    try:
        rendered = rendered_input(spec, inputs, outputs)
    except (TemplateError, TypeError, ValueError) as exc:
        return StepPlan(key, None, f"its input cannot be rendered with the new inputs ({exc})")
    if rendered is None or not same_json(rendered, old.input):
        return StepPlan(key, None, "its input changed")
    return StepPlan(key, old, "same input, and every step it depends on is reused")


def rendered_input(spec: dict, inputs: dict, outputs: dict) -> dict | None:
    """The input a step of this spec would record (runs/engine/kinds/), rendered without running
    it; None for a kind this does not know, which then always runs again."""
    render: Callable[[str], str] = lambda source: templating.render(source, inputs=inputs, steps=outputs)  # noqa: E731
    kind = spec["kind"]
    if kind == "agent":
        return {"agent": spec["agent"], "prompt": render(spec["prompt"])}
    if kind == "tool":
        arguments = templating.render_value(spec.get("input", {}), inputs=inputs, steps=outputs)
        return {"tool": spec["tool"], "input": arguments}
    if kind == "condition":
        left, right = operands(spec, render)
        return {"left": left, "op": spec["op"], "right": right}
    if kind == "approval":
        return {}  # a gate records no input: it is reused when what it waits for is
    return None
