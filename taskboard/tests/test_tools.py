"""The sandbox tool kinds as tools: their risk floor, their input schema, and a call outside a
task's run."""

import pytest

from agents.models import Tool
from agents.services import tool_execute, tool_save
from agents.tools import ToolError
from runs.choices import RunStatus
from runs.tests.factories import make_workflow, start, statuses, step_of
from taskboard.choices import SandboxStatus
from taskboard.models import Sandbox


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
    with pytest.raises(ToolError, match="sandbox tools work inside a run"):
        tool_execute(tool=tool, arguments={"command": "ls"})


def test_tool_steps_of_a_workflow_share_a_sandbox_destroyed_when_the_run_ends(team, engine, settings, tmp_path):
    settings.SPARKOPS_SANDBOX_ROOT = str(tmp_path)
    for kind in ("write_file", "sandbox_exec"):
        tool_save(tool=Tool(project=team.project, name=kind, slug=kind, kind=kind, risk_class="write"))
    write = {
        "key": "write",
        "kind": "tool",
        "tool": "write_file",
        "input": {"path": "n.txt", "content": "{{ inputs.name }}"},
    }
    read = {
        "key": "read",
        "kind": "tool",
        "tool": "sandbox_exec",
        "input": {"command": "cat n.txt"},
        "depends_on": ["write"],
    }
    run = start(make_workflow(team.project, write, read))
    assert run.status == RunStatus.SUCCEEDED, statuses(run)
    assert step_of(run, "read").output["stdout"] == "Ada"
    (sandbox,) = Sandbox.objects.filter(run=run)
    assert sandbox.status == SandboxStatus.DESTROYED
    assert list(tmp_path.iterdir()) == []
