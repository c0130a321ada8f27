"""The ``task`` step kind: the one step of the system task workflow. It opens a sandbox, clones the
repository onto a new branch, lets the task's agent work there with its tools, pushes, opens the
pull request and settles the task; the sandbox is destroyed however the step ends."""

from urllib.parse import urlsplit

from agents.models import Agent
from runs.engine.context import StepCancelled, StepContext, StepFailed, StepHeld, save_input
from runs.engine.kinds.agent import _converse
from runs.engine.kinds.base import StepKind as EngineKind
from sparkops.lib import http
from workflows.kinds.base import StepKind as ValidationKind

from . import git, github, services
from .choices import GitOperationKind, SandboxStatus, TaskStatus
from .models import Sandbox, Task
from .sandboxes import SandboxError

FAILURES = (git.GitFailed, github.PullRequestFailed, SandboxError)


class TaskKind(ValidationKind):
    """Validation's view: no fields; the task travels in the run's inputs."""

    name = "task"


def _task_of(ctx: StepContext) -> Task:
    task = Task.objects.select_related("agent", "credential", "project").filter(pk=ctx.run.inputs.get("task")).first()
    if task is None:
        raise StepFailed("A task step runs only in the task board's workflow, for a task.", permanent=True)
    if task.status not in (TaskStatus.PENDING, TaskStatus.IN_PROGRESS):
        raise (
            StepCancelled()
            if task.status == TaskStatus.CANCELLED
            else StepFailed(f"The task is {task.status}.", permanent=True)
        )
    if task.agent is None or not task.agent.is_active:
        raise StepFailed("The task's agent is missing or disabled.", permanent=True, kind="AgentUnavailable")
    return task


def run(ctx: StepContext) -> dict:
    task = _task_of(ctx)
    services._claim(task, ctx.run, [TaskStatus.PENDING, TaskStatus.IN_PROGRESS])
    # A sandbox left by an earlier attempt (its worker died) goes before a new one is made.
    for old in Sandbox.objects.filter(task=task, status__in=services.SANDBOX_LIVE):
        services.sandbox_destroy(sandbox=old)
    agent = Agent.objects.select_related("credential").get(pk=task.agent_id)
    save_input(
        ctx, {"task": str(task.pk), "agent": agent.slug}, agent=agent, provider=agent.provider, model=agent.model
    )
    sandbox = services.sandbox_create(project=task.project, agent=agent, task=task, run=ctx.run)
    Sandbox.objects.filter(pk=sandbox.pk, status=SandboxStatus.READY).update(status=SandboxStatus.BUSY)
    keep = False
    try:
        return _work(ctx, task, agent, sandbox)
    except StepHeld:
        keep = True  # parked for a decision: the reaper's idle timeout bounds it; a rerun replaces it
        Sandbox.objects.filter(pk=sandbox.pk, status=SandboxStatus.BUSY).update(status=SandboxStatus.READY)
        raise
    except FAILURES as exc:
        services._finish(task, TaskStatus.FAILED, error=str(exc))
        raise StepFailed(str(exc), permanent=True, kind=type(exc).__name__) from exc
    except StepFailed as exc:
        if exc.permanent:
            services._finish(task, TaskStatus.FAILED, error=str(exc))
        raise
    finally:
        if not keep:
            services.sandbox_destroy(sandbox=sandbox)


def _work(ctx: StepContext, task: Task, agent: Agent, sandbox: Sandbox) -> dict:
    credential = services.github_credential(task)
    ws = services.workspace(sandbox, token=credential.get_secret() if credential else "")
    if not task.repository_url:
        answer = _converse(ctx, agent, _prompt(task))
        services._finish(task, TaskStatus.DONE)
        return {"answer": answer}
    cloned = services.git_operation(
        sandbox, GitOperationKind.CLONE, lambda: _clone(ws, task.repository_url, task.base_branch)
    ).detail
    branch = services.branch_name(task)
    services.git_operation(sandbox, GitOperationKind.CHECKOUT_BRANCH, lambda: git.checkout_branch(ws, branch))
    Task.objects.filter(pk=task.pk).update(branch=branch)
    Sandbox.objects.filter(pk=sandbox.pk).update(branch=branch)
    answer = _converse(ctx, agent, _prompt(task, branch))
    ctx.check_cancel()
    if ws.checked("Reading changes", "status", "--porcelain"):  # left uncommitted by the agent
        services.git_operation(sandbox, GitOperationKind.COMMIT, lambda: git.commit(ws, task.title))
    if not git.commits_since(ws, cloned["base_sha"]):
        services._finish(task, TaskStatus.DONE)
        return {"answer": answer, "branch": branch, "pull_request_url": ""}
    pushed = services.git_operation(sandbox, GitOperationKind.PUSH, lambda: git.push(ws, branch), branch=branch)
    url = _open_pr(task, sandbox, ws, branch, cloned["base_branch"], credential, answer)
    services._finish(task, TaskStatus.REVIEW, pull_request_url=url)
    return {"answer": answer, "branch": branch, "commit": pushed.commit_sha, "pull_request_url": url}


def _clone(ws, url: str, base_branch: str) -> dict:
    """The host is checked like any outbound call (no private or metadata addresses) before git
    connects to it."""
    if problem := services.repository_url_problem(url):
        raise git.GitFailed(f"Cloning {url} refused: {problem}")
    if url.startswith("https://"):
        try:
            http.resolve_checked(urlsplit(url).hostname, urlsplit(url).port or 443)
        except http.OutboundError as exc:
            raise git.GitFailed(f"Cloning {url} refused: {exc}") from exc
    return git.clone(ws, url, base_branch)


def _open_pr(task, sandbox, ws, branch: str, base: str, credential, answer: str) -> str:
    def open_it() -> dict:
        answer_ = github.open_pull_request(
            api_url=credential.base_url if credential else "",
            token=ws.token,
            repository=github.repository_of(task.repository_url),
            head=branch,
            base=base,
            title=task.title,
            body=f"{task.description}\n\n---\n{answer}".strip(),
        )
        return {"url": answer_.get("html_url", ""), "number": answer_.get("number")}

    try:
        operation = services.git_operation(sandbox, GitOperationKind.OPEN_PR, open_it, head=branch, base=base)
    except github.PullRequestFailed:
        # Nothing left behind: the branch pushed for the pull request goes with it.
        ws.git("push", "--quiet", "origin", "--delete", branch, auth=True)
        raise
    return operation.detail["url"]


def _prompt(task: Task, branch: str = "") -> str:
    where = f"\n\n(You work in a clone of {task.repository_url} on branch {branch}.)" if branch else ""
    return f"{task.title}\n\n{task.description}".strip() + where


ENGINE_KIND = EngineKind("task", run)
