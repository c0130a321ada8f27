"""Validation of a workflow definition and its input schema, as pure code: no Django, no ORM, so
the API, the admin and the run engine share one set of rules. The fields and checks of each step
kind are its module in ``kinds``; the graph (dependencies, cycles) is ``dag``.

Errors, as ``validate()`` returns them ({} when valid), nest like the request body, with one list
of messages per step, named by its key (or by its 0-based position, "#2", when the key itself is
unusable)::

    {"definition": {"steps": {"fetch": ["depends_on: unknown step 'nope'."]}},
     "input_schema": ["type: the inputs are one object, so the type must be \"object\"."]}

A problem with the definition as a whole is a list: ``{"definition": {"steps": ["Add at least one step."]}}``.
"""

import re
from collections.abc import Iterable, Mapping
from typing import Any

from jsonschema import Draft202012Validator, SchemaError

from . import dag, kinds, templating
from .definition import Catalog, key_list

KEY_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Far above any workflow a person writes as JSON; keeps validation (quadratic at worst) cheap.
MAX_STEPS = 200
RETRY_ATTEMPTS = (1, 10)
RETRY_BACKOFF_SECONDS = (0, 3600)
TIMEOUT_SECONDS = (1, 3600)
#: The fields every step has, whatever its kind (each kind adds its own).
COMMON_FIELDS = frozenset({"key", "kind", "depends_on", "retry", "timeout_seconds"})


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


def input_errors(schema: Any, inputs: Any) -> list[str]:
    """What is wrong with a run's ``inputs`` under its version's input schema (starting, retrying or
    scheduling a run all ask)."""
    validator = Draft202012Validator(schema or {"type": "object"})
    return [f"{'/'.join(map(str, e.absolute_path)) or '(inputs)'}: {e.message}" for e in validator.iter_errors(inputs)]


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
        self.deps = dag.dependency_map(self.by_key.values(), self.by_key)
        for cycle in dag.find_cycles(self.deps):
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
        kind = kinds.get(step.get("kind"))
        if kind is None or (kinds.is_system(kind.name) and not self.catalog.get("system")):
            self.add(label, f"kind: must be one of {', '.join(kinds.names())}.")
            return
        for field in sorted(set(step) - COMMON_FIELDS - kind.fields):
            self.add(label, f"{field}: not a field of a {kind.name} step.")
        for field in kind.required:
            if field not in step:
                self.add(label, f"{field}: required for a {kind.name} step.")
        self._check_depends_on(label, step.get("depends_on", []))
        self._check_limits(label, step)
        for message in kind.check(step, kinds.Known(self.catalog, self.by_key)):
            self.add(label, message)

    def _check_depends_on(self, label: str, depends_on: Any) -> None:
        if not key_list(depends_on):
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
                    before = dag.ancestors(self.deps, step.get("key"))
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
    kind = kinds.get(step.get("kind"))
    return kind.template_fields(step) if kind else []


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
