"""A workflow definition is a DAG of steps. Validation, order and readiness live here, as pure code:
no Django, no ORM, so the API, the admin and the run engine share one set of rules.

A definition::

    {"steps": [
        {"key": "fetch", "kind": "tool", "tool": "search", "input": {"q": "{{ inputs.topic }}"}},
        {"key": "summarize", "kind": "agent", "agent": "writer", "depends_on": ["fetch"],
         "prompt": "Summarize: {{ steps.fetch.output }}"},
    ]}

Edges: a step waits for every step in its ``depends_on`` and for any condition that names it in
``then`` or ``else`` (a branch runs after the condition that chooses it).

Errors, as ``validate()`` returns them ({} when valid), nest like the request body, with one list
of messages per step, named by its key (or by its 0-based position, "#2", when the key itself is
unusable)::

    {"definition": {"steps": {"fetch": ["depends_on: unknown step 'nope'."]}},
     "input_schema": ["type: the inputs are one object, so the type must be \"object\"."]}

A problem with the definition as a whole is a list: ``{"definition": {"steps": ["Add at least one step."]}}``.
"""

import heapq
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from jsonschema import Draft202012Validator, SchemaError

from . import templating

KEY_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
KINDS = ("agent", "tool", "approval", "condition")
OPS = ("==", "!=", "<", "<=", ">", ">=", "contains", "in")
# The project roles (sparkops.roles.Role, which this module may not import) a gate may name.
# Not viewer: developers write workflows and start runs, so a gate is there to stop them or
# their programs; a gate a viewer could open would let a read-only member make a run go on.
APPROVER_ROLES = ("owner", "admin", "developer")
DEFAULT_APPROVER_ROLE = "admin"
# Far above any workflow a person writes as JSON; keeps validation (quadratic at worst) cheap.
MAX_STEPS = 200
RETRY_ATTEMPTS = (1, 10)
RETRY_BACKOFF_SECONDS = (0, 3600)
TIMEOUT_SECONDS = (1, 3600)

COMMON_FIELDS = frozenset({"key", "kind", "depends_on", "retry", "timeout_seconds"})
KIND_FIELDS = {
    "agent": frozenset({"agent", "prompt"}),
    "tool": frozenset({"tool", "input"}),
    "approval": frozenset({"message", "role"}),
    "condition": frozenset({"left", "op", "right", "then", "else"}),
}
REQUIRED_FIELDS = {
    "agent": ("agent", "prompt"),
    "tool": ("tool",),
    "approval": (),
    "condition": ("left", "op", "right"),
}

# Step statuses the planner reads (the run engine owns the full set).
PENDING = "pending"
SUCCEEDED = "succeeded"
SKIPPED = "skipped"

Catalog = Mapping[str, Mapping[str, bool]]
Definition = Mapping[str, Any]


class CycleError(ValueError):
    def __init__(self, cycle: list[str]):
        self.cycle = cycle
        super().__init__(f"cycle: {' -> '.join(cycle)}")


# ------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------
def validate(definition: Any, input_schema: Any, catalog: Catalog) -> dict:
    """Every problem with a definition and its input schema, keyed like the request body; {} if none.
    ``catalog`` is ``{"agents": {slug: usable}, "tools": {slug: usable}}`` for the project."""
    errors: dict = {}
    schema_errors = input_schema_errors(input_schema)
    if schema_errors:
        errors["input_schema"] = schema_errors
    # With a broken schema the known inputs are a guess: skip the input checks rather than pile on.
    inputs = None if schema_errors else input_names(input_schema)
    definition_errors = _definition_errors(definition, inputs, catalog)
    if definition_errors:
        errors["definition"] = definition_errors
    return errors


def input_schema_errors(schema: Any) -> list[str]:
    if not isinstance(schema, dict):
        return ['Must be a JSON Schema object, e.g. {"type": "object", "properties": {"topic": {"type": "string"}}}.']
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(part) for part in exc.path) or "the top level"
        return [f"Not a valid JSON Schema at {where}: {exc.message}."]
    if schema.get("type", "object") != "object":
        return ['type: the inputs are one object, so the type must be "object".']
    return []


def input_names(schema: Mapping) -> dict[str, bool]:
    """Each input the schema declares, mapped to whether a run must give it."""
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    names = properties if isinstance(properties, dict) else {}
    return {name: name in required for name in names}


def _definition_errors(definition: Any, inputs: Mapping[str, bool] | None, catalog: Catalog) -> list | dict:
    if not isinstance(definition, dict):
        return ['Must be a JSON object with a list of steps, e.g. {"steps": [...]}.']
    errors: dict = {
        key: ['Unknown field; a definition has only "steps".'] for key in sorted(set(definition) - {"steps"})
    }
    steps = definition.get("steps")
    if steps is None:
        errors["steps"] = ["This field is required."]
    elif not isinstance(steps, list):
        errors["steps"] = ["Must be a list of steps."]
    elif not steps:
        errors["steps"] = ["Add at least one step."]
    elif len(steps) > MAX_STEPS:
        errors["steps"] = [f"At most {MAX_STEPS} steps."]
    else:
        step_errors = _StepChecker(steps, inputs, catalog).run()
        if step_errors:
            errors["steps"] = step_errors
    return errors


def _whole_int(value: Any, bounds: tuple[int, int]) -> bool:
    # bool is an int in Python; true is not a number of seconds.
    return isinstance(value, int) and not isinstance(value, bool) and bounds[0] <= value <= bounds[1]


def _key_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


class _StepChecker:
    """Checks a list of steps in passes: keys, each step's fields, the graph, then the templates."""

    def __init__(self, steps: list, inputs: Mapping[str, bool] | None, catalog: Catalog):
        self.steps = steps
        self.inputs = inputs
        self.catalog = catalog
        self.errors: dict[str, list[str]] = {}
        self.by_key: dict[str, dict] = {}  # the first step with each usable key
        self.labels: list[str] = []

    def run(self) -> dict[str, list[str]]:
        self._index_keys()
        for label, step in self._step_pairs():
            self._check_step(label, step)
        self.deps = _dependency_map(self.by_key.values(), self.by_key)
        for cycle in find_cycles(self.deps):
            self.add(cycle[0], f"cycle: {' -> '.join(cycle)} (each step waits for the next).")
        for label, step in self._step_pairs():
            self._check_templates(label, step)
        return self.errors

    def add(self, label: str, message: str) -> None:
        messages = self.errors.setdefault(label, [])
        if message not in messages:
            messages.append(message)

    def _step_pairs(self) -> Iterable[tuple[str, dict]]:
        return ((label, step) for label, step in zip(self.labels, self.steps, strict=True) if isinstance(step, dict))

    # ---------------------------------------------------------------- keys
    def _index_keys(self) -> None:
        first_at: dict[str, int] = {}
        for position, step in enumerate(self.steps):
            key = step.get("key") if isinstance(step, dict) else None
            usable = isinstance(key, str) and KEY_PATTERN.fullmatch(key)
            # A duplicate is named by position: its problems are not the first step's.
            label = key if usable and key not in first_at else f"#{position}"
            self.labels.append(label)
            if not isinstance(step, dict):
                self.add(label, "Must be an object with at least a key and a kind.")
            elif not usable:
                self.add(
                    label, 'key: required; a lowercase letter, then letters, digits or _ (64 at most), e.g. "fetch".'
                )
            elif key in first_at:
                self.add(label, f"key: '{key}' is already the key of step #{first_at[key]}.")
            else:
                first_at[key] = position
                self.by_key[key] = step

    # ---------------------------------------------------------------- fields
    def _check_step(self, label: str, step: dict) -> None:
        kind = step.get("kind")
        if kind not in KINDS:
            self.add(label, f"kind: must be one of {', '.join(KINDS)}.")
            return
        for field in sorted(set(step) - COMMON_FIELDS - KIND_FIELDS[kind]):
            self.add(label, f"{field}: not a field of a {kind} step.")
        for field in REQUIRED_FIELDS[kind]:
            if field not in step:
                self.add(label, f"{field}: required for a {kind} step.")
        self._check_depends_on(label, step.get("depends_on", []))
        self._check_limits(label, step)
        getattr(self, f"_check_{kind}")(label, step)

    def _check_depends_on(self, label: str, depends_on: Any) -> None:
        if not _key_list(depends_on):
            self.add(label, "depends_on: must be a list of step keys.")
            return
        for key in depends_on:
            if key not in self.by_key:
                self.add(label, f"depends_on: unknown step '{key}'.")
            elif depends_on.count(key) > 1:
                self.add(label, f"depends_on: '{key}' is listed more than once.")

    def _check_limits(self, label: str, step: dict) -> None:
        if "timeout_seconds" in step and not _whole_int(step["timeout_seconds"], TIMEOUT_SECONDS):
            self.add(label, "timeout_seconds: must be a whole number from 1 to 3600.")
        if "retry" not in step:
            return
        retry = step["retry"]
        if not isinstance(retry, dict) or set(retry) - {"attempts", "backoff_seconds"}:
            self.add(label, 'retry: must be an object like {"attempts": 3, "backoff_seconds": 10}.')
            return
        if "attempts" in retry and not _whole_int(retry["attempts"], RETRY_ATTEMPTS):
            self.add(label, "retry.attempts: must be a whole number from 1 to 10.")
        if "backoff_seconds" in retry and not _whole_int(retry["backoff_seconds"], RETRY_BACKOFF_SECONDS):
            self.add(label, "retry.backoff_seconds: must be a whole number from 0 to 3600.")

    def _check_catalog(self, label: str, kind: str, slug: Any) -> None:
        if not isinstance(slug, str):
            self.add(label, f"{kind}: must be the slug of a {kind} in this project.")
            return
        usable = self.catalog.get(f"{kind}s", {}).get(slug)
        if usable is None:
            self.add(label, f"{kind}: no {kind} '{slug}' in this project.")
        elif not usable:
            self.add(label, f"{kind}: '{slug}' is disabled.")

    def _check_agent(self, label: str, step: dict) -> None:
        if "agent" in step:
            self._check_catalog(label, "agent", step["agent"])
        if "prompt" in step and not isinstance(step["prompt"], str):
            self.add(label, "prompt: must be a template string.")

    def _check_tool(self, label: str, step: dict) -> None:
        if "tool" in step:
            self._check_catalog(label, "tool", step["tool"])
        if not isinstance(step.get("input", {}), dict):
            self.add(label, 'input: must be an object, e.g. {"query": "{{ inputs.topic }}"}.')

    def _check_approval(self, label: str, step: dict) -> None:
        if not isinstance(step.get("message", ""), str):
            self.add(label, "message: must be a template string.")
        if step.get("role", DEFAULT_APPROVER_ROLE) not in APPROVER_ROLES:
            self.add(
                label,
                f"role: must be one of {', '.join(APPROVER_ROLES)}; "
                "a gate cannot name a role below the developers who edit the workflow.",
            )

    def _check_condition(self, label: str, step: dict) -> None:
        if "left" in step and not isinstance(step["left"], str):
            self.add(label, "left: must be a template string.")
        if "op" in step and step["op"] not in OPS:
            self.add(label, f"op: must be one of {', '.join(OPS)}.")
        branches = {name: step.get(name, []) for name in ("then", "else")}
        for name, keys in branches.items():
            self._check_branch(label, name, keys)
        if all(_key_list(keys) for keys in branches.values()):
            if not any(branches.values()):
                self.add(label, "then/else: name the steps to run in at least one branch.")
            for key in sorted(set(branches["then"]) & set(branches["else"])):
                self.add(label, f"then/else: '{key}' cannot be in both branches.")

    def _check_branch(self, label: str, name: str, keys: Any) -> None:
        if not _key_list(keys):
            self.add(label, f"{name}: must be a list of step keys.")
            return
        for key in keys:
            if key not in self.by_key:
                self.add(label, f"{name}: unknown step '{key}'.")

    # ---------------------------------------------------------------- templates
    def _check_templates(self, label: str, step: dict) -> None:
        before: set[str] | None = None  # computed once, only if a template names a step
        for field, source in _template_fields(step):
            try:
                tree = templating.parse(source)
            except templating.TemplateProblem as exc:
                self.add(label, f"{field}: {exc}.")
                continue
            for name in sorted(templating.unknown_names(tree)):
                self.add(label, f"{field}: unknown variable '{name}'; use inputs.<name> or steps.<key>.output.")
            guarded = templating.guarded_inputs(tree)
            for reference in templating.references(tree):
                if reference.root == templating.STEPS and before is None:
                    before = ancestors(self.deps, step.get("key"))
                message = self._reference_problem(reference, before or set(), guarded)
                if message:
                    self.add(label, f"{field}: {message}")

    def _reference_problem(self, reference: templating.Reference, ancestors: set[str], guarded: set[str]) -> str | None:
        if not reference.path:
            return None  # the whole mapping, e.g. {{ inputs | tojson }}
        name = reference.path[0]
        if name is None:
            example = "inputs.topic" if reference.root == templating.INPUTS else "steps.fetch.output"
            return f"write the name out, e.g. {example}; a computed name cannot be checked."
        if reference.root == templating.INPUTS:
            return self._input_problem(name, guarded)
        return _step_reference_problem(name, reference.path[1:], self.by_key, ancestors)

    def _input_problem(self, name: str, guarded: set[str]) -> str | None:
        if self.inputs is None:
            return None
        if name not in self.inputs:
            known = ", ".join(sorted(self.inputs)) or "none"
            return f"unknown input '{name}'; the input schema's properties are: {known}."
        # A run may leave out an optional input, and reading a missing one fails the step: the
        # template must say what to use instead. Schema defaults are not filled in at run start.
        if not self.inputs[name] and name not in guarded:
            return (
                f"input '{name}' is optional, so a run may leave it out; write "
                f"{{{{ inputs.{name} | default(...) }}}}, test it with 'is defined', or make it required."
            )
        return None


def _step_reference_problem(key: str, rest: tuple, by_key: Mapping, ancestors: set[str]) -> str | None:
    if key not in by_key:
        return f"unknown step '{key}'."
    if key not in ancestors:
        return f"step '{key}' does not run before this one; add it to depends_on."
    if rest and rest[0] != templating.OUTPUT:
        return f"steps.{key}.{rest[0]}: only steps.{key}.output is available."
    return None


def _template_fields(step: dict) -> list[tuple[str, str]]:
    """(field, source) of every template in a step; values of the wrong type are reported elsewhere."""
    kind = step.get("kind")
    if kind == "tool":
        tool_input = step.get("input")
        return list(templating.strings_in(tool_input, "input")) if isinstance(tool_input, dict) else []
    names = {"agent": ("prompt",), "approval": ("message",), "condition": ("left", "right")}.get(kind, ())
    return [(name, step[name]) for name in names if isinstance(step.get(name), str)]


# ------------------------------------------------------------------------------
# The graph
# ------------------------------------------------------------------------------
def _dependency_map(steps: Iterable[Mapping], known: Mapping[str, Any]) -> dict[str, list[str]]:
    """key -> the keys it waits for. Tolerant of bad input (it is also used while validating):
    entries that are not known keys are left out."""
    deps: dict[str, list[str]] = {}
    for step in steps:
        listed = step.get("depends_on", [])
        deps[step["key"]] = [key for key in listed if key in known] if _key_list(listed) else []
    for step in steps:
        if step.get("kind") != "condition":
            continue
        for name in ("then", "else"):
            branch = step.get(name, [])
            for key in branch if _key_list(branch) else []:
                if key in deps and step["key"] not in deps[key]:
                    deps[key].append(step["key"])
    return deps


def dependencies(definition: Definition) -> dict[str, list[str]]:
    """For a valid definition: each step's key -> the keys it waits for (its depends_on, plus any
    condition naming it in then/else), in definition order."""
    steps = definition["steps"]
    return _dependency_map(steps, {step["key"]: step for step in steps})


def find_cycles(deps: Mapping[str, list[str]]) -> list[list[str]]:
    """Cycles met by a depth-first walk, each as [a, b, ..., a] where a waits for b. Iterative, so
    a long chain of steps cannot exhaust Python's recursion limit."""
    state: dict[str, int] = {}  # absent: unseen, 1: on the current path, 2: done
    cycles = []
    for root in deps:
        if root in state:
            continue
        path, stack = [root], [iter(deps[root])]
        state[root] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                cycles.append([*path[path.index(child) :], child])
            elif child not in state:
                state[child] = 1
                path.append(child)
                stack.append(iter(deps[child]))
    return cycles


def ancestors(deps: Mapping[str, list[str]], key: Any) -> set[str]:
    """Every step that must finish before ``key`` starts (excluding itself, even within a cycle)."""
    seen: set[str] = set()
    todo = list(deps.get(key, []))
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(deps.get(current, []))
    seen.discard(key)
    return seen


def topological_order(definition: Definition) -> list[str]:
    """Step keys so that each comes after everything it waits for; ties keep definition order.
    Raises CycleError naming a cycle when there is none."""
    deps = dependencies(definition)
    position = {key: i for i, key in enumerate(deps)}
    waiting = {key: len(set(keys)) for key, keys in deps.items()}
    dependents: dict[str, list[str]] = {key: [] for key in deps}
    for key, keys in deps.items():
        for needed in set(keys):
            dependents[needed].append(key)
    heap = [position[key] for key, count in waiting.items() if count == 0]
    heapq.heapify(heap)
    order: list[str] = []
    keys = list(deps)
    while heap:
        key = keys[heapq.heappop(heap)]
        order.append(key)
        for dependent in dependents[key]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(heap, position[dependent])
    if len(order) < len(keys):
        raise CycleError(find_cycles(deps)[0])
    return order


# ------------------------------------------------------------------------------
# Planning: which steps run next. The rule, for the run engine:
#   - A step is *ready* when it is pending (or has no status yet) and every step it waits for
#     has succeeded.
#   - A condition chooses a branch: the engine marks the steps of the branch not taken as skipped
#     (``untaken_branch``).
#   - A pending step that waits for a skipped step is skipped too (``steps_to_skip``), so an untaken
#     branch skips everything downstream of it, joins included (Airflow's default, all_success).
#   - A failed (or cancelled) step leaves the steps waiting for it pending: they never become
#     ready, and the engine ends the run.
# ------------------------------------------------------------------------------
def _is_pending(statuses: Mapping[str, str], key: str) -> bool:
    return statuses.get(key, PENDING) == PENDING


def ready_steps(definition: Definition, statuses: Mapping[str, str]) -> list[str]:
    """Keys of the steps to start now, in definition order (see the rule above)."""
    return [
        key
        for key, waits_for in dependencies(definition).items()
        if _is_pending(statuses, key) and all(statuses.get(needed) == SUCCEEDED for needed in waits_for)
    ]


def steps_to_skip(definition: Definition, statuses: Mapping[str, str]) -> list[str]:
    """Keys of pending steps that can never run because a step they wait for, directly or through
    other pending steps, was skipped. In topological order."""
    deps = dependencies(definition)
    skipped = {key for key, status in statuses.items() if status == SKIPPED}
    found = []
    for key in topological_order(definition):
        if _is_pending(statuses, key) and any(needed in skipped for needed in deps[key]):
            skipped.add(key)
            found.append(key)
    return found


def untaken_branch(definition: Definition, condition_key: str, outcome: bool) -> list[str]:
    """The steps a condition rules out: its ``else`` when it held, its ``then`` when it did not."""
    step = next(step for step in definition["steps"] if step["key"] == condition_key)
    return list(step.get("else" if outcome else "then", []))


# ------------------------------------------------------------------------------
# Comparing versions
# ------------------------------------------------------------------------------
def step_changes(old: Definition, new: Definition) -> dict[str, list[str]]:
    """Step keys added, removed and changed (in any field) between two valid definitions."""
    before = {step["key"]: step for step in old.get("steps", [])}
    after = {step["key"]: step for step in new.get("steps", [])}
    return {
        "added": [key for key in after if key not in before],
        "removed": [key for key in before if key not in after],
        "changed": [key for key in after if key in before and after[key] != before[key]],
    }


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON: unlike ==, true is not 1 and 1 is not 1.0 (1.0 == 1 == True in Python)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def flat_messages(errors: Any, prefix: str = "") -> list[str]:
    """Errors as one line each, e.g. "steps > fetch: depends_on: unknown step 'nope'.", for forms."""
    if isinstance(errors, dict):
        lines = []
        for name, nested in errors.items():
            lines += flat_messages(nested, f"{prefix}{name} > ")
        return lines
    if isinstance(errors, list):
        return [f"{prefix[:-3]}: {message}" if prefix else str(message) for message in errors]
    return [f"{prefix}{errors}"]
