"""What every tool executor speaks. Executors run one call and never touch run rows."""

import abc
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Sandboxed: templates can read what they are given and call nothing unsafe; never eval.
TEMPLATES = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


@dataclass
class ToolResult:
    output: Any
    latency_ms: float


class ToolError(Exception):
    """A failed tool call; ``permanent`` says whether trying again could help."""

    def __init__(self, message: str, *, permanent: bool, retry_after: float | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


class ToolExecutor(abc.ABC):
    kind: str = ""

    @abc.abstractmethod
    def validate_config(self, config: dict) -> dict[str, str]:
        """Field -> message for each problem in a tool's config; empty when valid."""

    @abc.abstractmethod
    def execute(self, *, config: dict, arguments: dict, secret: str = "") -> ToolResult:
        """Run the tool once with validated arguments. Raises ToolError."""

    def default_input_schema(self, config: dict) -> dict:
        return {"type": "object"}


def render(template: str, context: dict) -> str:
    try:
        return TEMPLATES.from_string(template).render(context)
    except TemplateError as exc:
        raise ToolError(f"Template error: {exc}", permanent=True) from exc


def template_errors(template: str) -> str | None:
    try:
        TEMPLATES.parse(template)
    except TemplateError as exc:
        return str(exc)
    return None
