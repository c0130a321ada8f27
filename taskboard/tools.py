"""The sandbox tool kinds: ``sandbox_exec``, ``read_file``, ``write_file`` and ``git_commit``. They
work in the sandbox of the run that calls them (a task's run); registered into ``agents.tools``
at ready(), so the agents layer never imports this app."""

import jsonschema

from agents.choices import RiskClass
from agents.tools import CallLimits, ToolError, ToolExecutor, ToolResult
from agents.tools.base import NO_LIMITS

from . import git, services
from .choices import GitOperationKind
from .sandboxes import Limits, SandboxError, get


class SandboxTool(ToolExecutor):
    knows_input_schema = True
    input_schema: dict = {"type": "object"}

    def validate_config(self, config: dict) -> dict[str, str]:
        return {}

    def default_input_schema(self, config: dict) -> dict:
        return self.input_schema

    def execute(self, *, config: dict, arguments: dict, secret: str = "", limits: CallLimits = NO_LIMITS) -> ToolResult:
        problem = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(self.input_schema).iter_errors(arguments)
        )
        if problem is not None:
            raise ToolError(f"Invalid input for {self.kind}: {problem.message}", permanent=True)
        try:
            sandbox = services.sandbox_of_run(limits.run_id)
            bounds = Limits.from_dict(sandbox.limits)
            if limits.timeout is not None:
                bounds = Limits.from_dict({**sandbox.limits, "timeout": min(bounds.timeout, limits.timeout)})
            output = self.work(sandbox, bounds, arguments)
        except (SandboxError, git.GitFailed) as exc:
            raise ToolError(str(exc), permanent=True) from exc
        return ToolResult(output=output, latency_ms=0.0)

    def work(self, sandbox, limits: Limits, arguments: dict):
        raise NotImplementedError


class ExecTool(SandboxTool):
    kind = "sandbox_exec"
    risk_floor = RiskClass.WRITE
    input_schema = {
        "type": "object",
        "properties": {"command": {"type": "string", "minLength": 1, "maxLength": 10000}},
        "required": ["command"],
    }

    def work(self, sandbox, limits, arguments):
        result = get(sandbox.provider).exec(sandbox.external_id, ["sh", "-c", arguments["command"]], limits=limits)
        return result.as_dict()


class ReadFileTool(SandboxTool):
    kind = "read_file"
    risk_floor = RiskClass.READ
    input_schema = {
        "type": "object",
        "properties": {"path": {"type": "string", "minLength": 1, "maxLength": 1000}},
        "required": ["path"],
    }

    def work(self, sandbox, limits, arguments):
        return get(sandbox.provider).read_file(sandbox.external_id, arguments["path"], limits=limits)


class WriteFileTool(SandboxTool):
    kind = "write_file"
    risk_floor = RiskClass.WRITE
    input_schema = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "minLength": 1, "maxLength": 1000},
            "content": {"type": "string", "maxLength": 1_000_000},
        },
        "required": ["path", "content"],
    }

    def work(self, sandbox, limits, arguments):
        get(sandbox.provider).write_file(sandbox.external_id, arguments["path"], arguments["content"], limits=limits)
        return {"written": arguments["path"], "bytes": len(arguments["content"].encode())}


class CommitTool(SandboxTool):
    """Commits in the sandbox's clone; the task pushes its branch when the agent is done, so
    pushing (a write to the outside) is this class too."""

    kind = "git_commit"
    risk_floor = RiskClass.WRITE
    input_schema = {
        "type": "object",
        "properties": {"message": {"type": "string", "minLength": 1, "maxLength": 5000}},
        "required": ["message"],
    }

    def work(self, sandbox, limits, arguments):
        ws = services.workspace(sandbox)
        operation = services.git_operation(
            sandbox, GitOperationKind.COMMIT, lambda: git.commit(ws, arguments["message"]), message=arguments["message"]
        )
        return {"sha": operation.commit_sha}


EXECUTORS = (ExecTool(), ReadFileTool(), WriteFileTool(), CommitTool())
