"""Task board services: tasks and their runs, sandboxes and their lifecycle, git operations and pull
requests. The API, the admin, the task step and the reaper all come through here."""

from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from accounts.models import User
from agents.models import Agent, ProviderCredential
from runs import services as run_services
from runs.choices import RUN_ACTIVE, RunStatus, Trigger
from runs.models import Run
from sparkops.lib.errors import Refused
from workflows import services as workflow_services
from workflows.models import Workflow

from . import git, github, sandboxes
from .choices import (
    RUN_PRIORITY,
    SANDBOX_LIVE,
    TASK_ACTIVE,
    GitOperationStatus,
    SandboxStatus,
    TaskStatus,
)
from .models import GitOperation, Sandbox, Task

SYSTEM_SLUG = "task-board"
TASK_STEP = {"key": "task", "kind": "task", "timeout_seconds": 3600, "retry": {"attempts": 1}}
TASK_SCHEMA = {"type": "object", "properties": {"task": {"type": "string"}}, "required": ["task"]}
EDITABLE_WHILE_PENDING = ("title", "description", "priority", "agent", "repository_url", "base_branch", "credential")


class TaskStateRefused(Refused):
    """The task is not in a state that allows this (e.g. editing a task that already started)."""

    status_code = 409
    code = "conflict"


# ------------------------------------------------------------------------------
# Tasks
# ------------------------------------------------------------------------------
def task_errors(task: Task) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if task.agent is not None and task.agent.project_id != task.project_id:
        errors["agent"] = ["The agent belongs to another project."]
    if task.credential is not None and task.credential.project_id != task.project_id:
        errors["credential"] = ["The credential belongs to another project."]
    elif task.credential is not None and task.credential.provider != "github":
        errors["credential"] = ["Pick a github credential (its token pushes and opens the pull request)."]
    if problem := repository_url_problem(task.repository_url):
        errors["repository_url"] = [problem]
    return errors


def repository_url_problem(url: str) -> str | None:
    """Why git may not clone ``url``: only https URLs without credentials in them; local paths
    only where SPARKOPS_TASK_LOCAL_REPOSITORIES allows (development, tests), since a clone of a
    server path would hand the agent files of the server."""
    if not url:
        return None
    if settings.SPARKOPS_TASK_LOCAL_REPOSITORIES and url.startswith("/"):
        return None
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        return 'An https URL, e.g. "https://github.com/acme/shop.git".'
    if "@" in parts.netloc:
        return "Put no credentials in the URL; pick a github credential instead."
    return None


def task_save(*, task: Task) -> Task:
    if errors := task_errors(task):
        raise ValidationError(errors)
    task.full_clean()
    task.save()
    return task


def task_update(*, task: Task, **fields: Any) -> Task:
    """Edit a task that has not started; after that its title and the rest are what the run used."""
    if task.status != TaskStatus.PENDING:
        raise TaskStateRefused(f"Only a pending task can be edited; this one is {task.status}.")
    for name, value in fields.items():
        if name in EDITABLE_WHILE_PENDING:
            setattr(task, name, value)
    return task_save(task=task)


def system_workflow(project) -> Workflow:
    """The project's task workflow: one step of kind ``task``, marked system, made on first use.
    Every task runs as a run of it; the task (and so its agent) travels in the run's inputs."""
    workflow = Workflow.everything.filter(project=project, system=True, slug=SYSTEM_SLUG).first()
    if workflow is not None:
        return workflow
    try:
        with transaction.atomic():
            return workflow_services.workflow_create(
                project=project,
                user=None,
                name="Task board",
                slug=SYSTEM_SLUG,
                description="Runs the task board's tasks; made and used by the platform.",
                definition={"steps": [TASK_STEP]},
                input_schema=TASK_SCHEMA,
                publish=True,
                system=True,
            )
    except ValidationError as exc:  # made by a concurrent first task
        if "slug" not in getattr(exc, "message_dict", {}):
            raise
        return Workflow.everything.get(project=project, system=True, slug=SYSTEM_SLUG)


def task_start(*, task: Task, user: User | None, api_key=None, idempotency_key: str = "") -> Task:
    """Start a pending task: a run of the system workflow, which its agent works in."""
    if task.status != TaskStatus.PENDING:
        raise TaskStateRefused(f"Only a pending task can be started; this one is {task.status}.")
    if task.agent is None:
        raise ValidationError({"agent": ["Assign an agent before starting the task."]})
    if not task.agent.is_active:
        raise ValidationError({"agent": ["The agent is disabled."]})
    run, _ = run_services.run_start(
        workflow=system_workflow(task.project),
        inputs={"task": str(task.pk)},
        user=user,
        trigger=Trigger.API,
        title=task.title,
        priority=RUN_PRIORITY[task.priority],
        task_agent=task.agent,
        api_key=api_key,
        idempotency_key=idempotency_key,
    )
    _claim(task, run, [TaskStatus.PENDING])
    task.refresh_from_db()
    return task


def task_start_for_agent(
    *, agent: Agent, user: User, api_key=None, idempotency_key: str = "", **fields
) -> tuple[Task, bool]:
    """``POST /agents/{id}/start-task``: a task for this agent, started at once; (task, created).
    A repeated Idempotency-Key answers with the first task. A start refused (a policy, a disabled
    agent) leaves no task behind."""
    if replayed := _replayed_task(agent, idempotency_key, fields):
        return replayed, False
    task = task_save(task=Task(project=agent.project, agent=agent, created_by=user, **fields))
    try:
        return task_start(task=task, user=user, api_key=api_key, idempotency_key=idempotency_key), True
    except BaseException:
        Task.objects.filter(pk=task.pk, status=TaskStatus.PENDING).delete()
        raise


def _replayed_task(agent: Agent, key: str, fields: dict) -> Task | None:
    run = Run.objects.filter(project_id=agent.project_id, idempotency_key=key).first() if key else None
    if run is None:
        return None
    task = Task.objects.filter(runs=run).first()
    asked = {name: getattr(task, name, None) for name in fields}
    if task is None or task.agent_id != agent.pk or asked != fields:
        raise run_services.IdempotencyKeyReused(key, run)
    return task


def _claim(task: Task, run: Run, allowed) -> bool:
    """pending -> in_progress with ``run``, once: the step may get there before task_start does."""
    with transaction.atomic():
        task.runs.add(run)
        moved = Task.objects.filter(pk=task.pk, status__in=allowed).update(
            status=TaskStatus.IN_PROGRESS, started_at=timezone.now()
        )
        if moved:
            Agent.objects.filter(pk=task.agent_id).update(current_task=task)
    return bool(moved)


def _finish(task: Task, status: str, **fields) -> bool:
    """Move an active task to an end state once; the agent is idle again."""
    with transaction.atomic():
        moved = Task.objects.filter(pk=task.pk, status__in=TASK_ACTIVE).update(
            status=status, completed_at=timezone.now(), **fields
        )
        if moved:
            Agent.objects.filter(current_task=task).update(current_task=None)
    return bool(moved)


def task_cancel(*, task: Task) -> Task:
    """Cancel a pending or running task: its run stops at its next check and its sandboxes are
    destroyed now. Cancelling twice is harmless; cancelling an ended task is refused."""
    if task.status == TaskStatus.CANCELLED:
        return task
    if not _finish(task, TaskStatus.CANCELLED):
        raise TaskStateRefused(f"The task has ended ({task.status}); there is nothing to cancel.")
    for run in Run.objects.filter(pk__in=task.runs.values("pk"), status__in=RUN_ACTIVE):
        run_services.run_cancel(run=run)
    for sandbox in Sandbox.objects.filter(task=task, status__in=SANDBOX_LIVE):
        sandbox_destroy(sandbox=sandbox)
    task.refresh_from_db()
    return task


def task_settle_run(*, run_id: Any, status: str) -> None:
    """A task run ended without the task step settling the task (it failed before, its worker
    died, it was cancelled from /runs): the task ends with it, and its sandboxes go."""
    ended = {RunStatus.FAILED: TaskStatus.FAILED, RunStatus.CANCELLED: TaskStatus.CANCELLED}.get(status)
    if ended:  # a run that succeeded leaves its task to the task step (no read at every run's end)
        for task in Task.objects.filter(runs=run_id, status__in=TASK_ACTIVE):
            _finish(task, ended, error=f"Its run {run_id} ended {status}.")
    transaction.on_commit(lambda: _destroy_for_run(run_id))


def _destroy_for_run(run_id: Any) -> None:
    for sandbox in Sandbox.objects.filter(run_id=run_id, status__in=SANDBOX_LIVE):
        sandbox_destroy(sandbox=sandbox)


# ------------------------------------------------------------------------------
# Sandboxes
# ------------------------------------------------------------------------------
def sandbox_create(*, project, agent=None, task=None, run=None, provider: str = "") -> Sandbox:
    """Write the row first (so the reaper knows of it), then ask the provider for the sandbox."""
    name = provider or settings.SPARKOPS_SANDBOX_PROVIDER
    adapter = sandboxes.get(name)
    limits = sandboxes.Limits(**settings.SPARKOPS_SANDBOX_LIMITS)
    sandbox = Sandbox.objects.create(
        project=project,
        agent=agent,
        task=task,
        run=run,
        provider=name,
        limits=limits.as_dict(),
        repository_url=task.repository_url if task else "",
        last_used_at=timezone.now(),
    )
    try:
        external_id = adapter.create(sandbox_id=str(sandbox.pk), limits=limits)
    except sandboxes.SandboxError as exc:
        _mark(sandbox, SandboxStatus.FAILED, last_error=str(exc), destroyed_at=timezone.now())
        raise
    _mark(sandbox, SandboxStatus.READY, external_id=external_id)
    return sandbox


def _mark(sandbox: Sandbox, status: str, **fields) -> None:
    for name, value in {"status": status, **fields}.items():
        setattr(sandbox, name, value)
    Sandbox.objects.filter(pk=sandbox.pk).update(status=status, **fields)


def sandbox_destroy(*, sandbox: Sandbox) -> Sandbox:
    """Destroy it at the provider and record when; safe to call twice or on a gone sandbox."""
    claimed = Sandbox.objects.filter(pk=sandbox.pk, status__in=SANDBOX_LIVE).update(status=SandboxStatus.STOPPING)
    if not claimed:
        sandbox.refresh_from_db()
        return sandbox
    try:
        provider = sandboxes.get(sandbox.provider)
        provider.destroy(sandbox.external_id or str(sandbox.pk))
    except Exception as exc:  # noqa: BLE001 - any provider failure: leave it to the reaper
        _mark(sandbox, SandboxStatus.STOPPING, last_error=f"Destroy failed, the reaper retries: {exc}")
        return sandbox
    now = timezone.now()
    cost = Decimal(str(provider.usd_per_second())) * Decimal((now - sandbox.created_at).total_seconds())
    _mark(sandbox, SandboxStatus.DESTROYED, destroyed_at=now, cost_usd=cost.quantize(Decimal("0.000001")))
    return sandbox


def workspace(sandbox: Sandbox, token: str = "") -> git.Workspace:
    agent = sandbox.agent
    return git.Workspace(
        provider=sandboxes.get(sandbox.provider),
        external_id=sandbox.external_id,
        limits=sandboxes.Limits.from_dict(sandbox.limits),
        author=agent.name if agent else "Spark-Ops agent",
        email=f"{agent.slug if agent else 'agent'}@agents.sparkops.invalid",
        token=token,
    )


def sandbox_touch(sandbox: Sandbox) -> None:
    """Used now: the idle timeout starts again."""
    Sandbox.objects.filter(pk=sandbox.pk).update(last_used_at=timezone.now())


def sandbox_of_run(run_id: str) -> Sandbox:
    """The live sandbox a run's tools work in: its task's, or one made for the run on its first
    sandbox call (a workflow's tool steps share it; it is destroyed when the run ends)."""
    sandbox = (
        Sandbox.objects.select_related("agent")
        .filter(run_id=run_id or None, status__in=[SandboxStatus.READY, SandboxStatus.BUSY])
        .order_by("-created_at")
        .first()
    )
    if sandbox is None:
        run = Run.objects.filter(pk=run_id or None, status__in=RUN_ACTIVE).first()
        if run is None:
            raise sandboxes.SandboxError("No sandbox for this call: sandbox tools work inside a run.")
        return sandbox_create(project=run.project, run=run)
    sandbox_touch(sandbox)
    return sandbox


def sandboxes_reap(*, now=None) -> dict[str, int]:
    """Destroy what nobody will destroy: sandboxes idle past the timeout (a worker killed mid-task
    left them), sandboxes of ended runs or tasks, stuck destroys; and provider sandboxes with no
    live row at all (a kill between the provider's create and our write)."""
    now = now or timezone.now()
    idle_since = now - timezone.timedelta(seconds=settings.SPARKOPS_SANDBOX_IDLE_SECONDS)
    stale = Sandbox.objects.filter(status__in=SANDBOX_LIVE).filter(
        Q(last_used_at__lt=idle_since)
        | Q(status=SandboxStatus.STOPPING)
        | Q(run__status__in=[RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED])
        | Q(task__status__in=[TaskStatus.DONE, TaskStatus.REVIEW, TaskStatus.FAILED, TaskStatus.CANCELLED])
    )
    counts = {"sandboxes": 0, "orphans": 0}
    for sandbox in stale:
        Sandbox.objects.filter(pk=sandbox.pk, status=SandboxStatus.STOPPING).update(status=SandboxStatus.READY)
        if sandbox_destroy(sandbox=sandbox).status == SandboxStatus.DESTROYED:
            counts["sandboxes"] += 1
    counts["orphans"] = _reap_orphans()
    return counts


def _reap_orphans() -> int:
    destroyed = 0
    for name in sandboxes.names():
        provider = sandboxes.get(name)
        if provider.available():
            continue
        live = Sandbox.objects.filter(provider=name, status__in=SANDBOX_LIVE)
        known = {str(pk) for pk in live.values_list("pk", flat=True)} | set(live.values_list("external_id", flat=True))
        for external_id in provider.orphans(known):
            provider.destroy(external_id)
            destroyed += 1
    return destroyed


# ------------------------------------------------------------------------------
# Git operations: each one recorded with its outcome
# ------------------------------------------------------------------------------
def git_operation(sandbox: Sandbox, kind: str, work: Callable[[], dict | str], **detail) -> GitOperation:
    """Run ``work`` as one recorded operation. Raises git.GitFailed / PullRequestFailed after
    recording the failure; returns the succeeded operation."""
    operation = GitOperation.objects.create(sandbox=sandbox, task=sandbox.task, kind=kind, detail=detail)
    sandbox_touch(sandbox)
    try:
        outcome = work()
    except (git.GitFailed, github.PullRequestFailed, sandboxes.SandboxError) as exc:
        _settle(operation, GitOperationStatus.FAILED, error=str(exc))
        raise
    sha = outcome if isinstance(outcome, str) else outcome.pop("sha", "")
    more = outcome if isinstance(outcome, dict) else {}
    _settle(operation, GitOperationStatus.SUCCEEDED, commit_sha=sha, detail={**detail, **more})
    return operation


def _settle(operation: GitOperation, status: str, **fields) -> None:
    for name, value in {"status": status, "finished_at": timezone.now(), **fields}.items():
        setattr(operation, name, value)
    operation.save(update_fields=["status", "finished_at", *fields])


def github_credential(task: Task) -> ProviderCredential | None:
    if task.credential is not None:
        return task.credential
    return ProviderCredential.objects.filter(project_id=task.project_id, provider="github").order_by("name").first()


def branch_name(task: Task) -> str:
    return f"task/{slugify(task.title)[:40] or 'work'}-{str(task.pk)[:8]}"
