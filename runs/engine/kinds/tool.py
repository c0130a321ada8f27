"""A tool step: render the input, call the project's tool once."""

from typing import Any

from jinja2 import TemplateError

from workflows import templating

from ..calls import call_tool, project_tool
from ..context import StepContext, StepFailed, save_input
from .base import StepKind


def run(ctx: StepContext) -> Any:
    tool = project_tool(ctx, ctx.spec["tool"])
    try:
        arguments = templating.render_value(ctx.spec.get("input", {}), inputs=ctx.run.inputs, steps=ctx.outputs)
    except TemplateError as exc:
        raise StepFailed(f"Template error: {exc}", permanent=True, kind="TemplateError") from exc
    save_input(ctx, {"tool": tool.slug, "input": arguments}, tool=tool)
    ctx.check_cancel()
    return call_tool(ctx, tool, arguments)


KIND = StepKind("tool", run)
