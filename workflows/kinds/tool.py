"""A tool step: one call of one of the project's tools, with an input whose strings are templates."""

from .. import templating
from .base import Known, StepKind, catalog_problem


class ToolKind(StepKind):
    name = "tool"
    fields = frozenset({"tool", "input"})
    required = ("tool",)

    def check(self, step: dict, known: Known) -> list[str]:
        problems = []
        if "tool" in step and (problem := catalog_problem("tool", step["tool"], known.catalog)):
            problems.append(problem)
        if not isinstance(step.get("input", {}), dict):
            problems.append('input: must be an object, e.g. {"query": "{{ inputs.topic }}"}.')
        return problems

    def template_fields(self, step: dict) -> list[tuple[str, str]]:
        tool_input = step.get("input")
        return list(templating.strings_in(tool_input, "input")) if isinstance(tool_input, dict) else []
