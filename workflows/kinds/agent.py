"""An agent step: a conversation with one of the project's agents, from a prompt template."""

from .base import Known, StepKind, catalog_problem


class AgentKind(StepKind):
    name = "agent"
    fields = frozenset({"agent", "prompt"})
    required = ("agent", "prompt")
    templated = ("prompt",)

    def check(self, step: dict, known: Known) -> list[str]:
        problems = []
        if "agent" in step and (problem := catalog_problem("agent", step["agent"], known.catalog)):
            problems.append(problem)
        if "prompt" in step and not isinstance(step["prompt"], str):
            problems.append("prompt: must be a template string.")
        return problems
