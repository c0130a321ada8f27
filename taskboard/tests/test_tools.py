"""The sandbox tool kinds as tools: their risk floor, their input schema, and a call outside a
task's run."""

import pytest

from agents.models import Tool
from agents.services import tool_execute, tool_save
from agents.tools import ToolError


@pytest.mark.parametrize(
    ("kind", "floor"), [("sandbox_exec", "write"), ("write_file", "write"), ("git_commit", "write")]
)
def test_a_sandbox_tool_is_never_classed_below_its_risk_floor(db, team, kind, floor):
    tool = tool_save(tool=Tool(project=team.project, name=kind, slug=kind, kind=kind, risk_class="read"))
    assert Tool.objects.get(pk=tool.pk).risk_class == floor


def test_a_sandbox_tool_brings_its_input_schema(db, team):
    tool = tool_save(tool=Tool(project=team.project, name="Read", slug="read", kind="read_file", risk_class="read"))
    assert tool.input_schema["required"] == ["path"]


def test_a_sandbox_tool_called_outside_a_tasks_run_says_why(db, team):
    tool = tool_save(tool=Tool(project=team.project, name="Run", slug="run", kind="sandbox_exec", risk_class="write"))
    with pytest.raises(ToolError, match="sandbox tools work inside a task's run"):
        tool_execute(tool=tool, arguments={"command": "ls"})
