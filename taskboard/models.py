import uuid

from django.conf import settings
from django.db import models

from .choices import GitOperationKind, GitOperationStatus, SandboxStatus, TaskPriority, TaskStatus


class Task(models.Model):
    """A piece of work a person gives an agent: it runs as a run of the project's system task
    workflow, in a sandbox holding a clone of the repository, and ends with a pull request."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="tasks")
    title = models.CharField(max_length=200, help_text='e.g. "Fix the typo in README".')
    description = models.TextField(blank=True, default="", help_text="What to do, told to the agent.")
    status = models.CharField(max_length=16, choices=TaskStatus.choices, default=TaskStatus.PENDING, editable=False)
    priority = models.CharField(max_length=8, choices=TaskPriority.choices, default=TaskPriority.MEDIUM)
    agent = models.ForeignKey(
        "agents.Agent",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="board_tasks",
        help_text="The assignee.",
    )
    repository_url = models.CharField(
        max_length=500,
        blank=True,
        default="",
        help_text='The repository to clone, e.g. "https://github.com/acme/shop.git". Empty: no git work.',
    )
    base_branch = models.CharField(max_length=200, blank=True, default="", help_text='e.g. "main"; empty: the default.')
    branch = models.CharField(max_length=200, blank=True, default="", editable=False, help_text="The task's branch.")
    pull_request_url = models.URLField(max_length=500, blank=True, default="", editable=False)
    credential = models.ForeignKey(
        "agents.ProviderCredential",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="A github credential: its token pushes and opens the pull request.",
    )
    runs = models.ManyToManyField("runs.Run", blank=True, related_name="+", editable=False)
    error = models.TextField(blank=True, default="", editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True, editable=False)
    completed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        # Serves the board: "project = ? AND status = ? ORDER BY created_at DESC".
        indexes = [models.Index(fields=["project", "status", "-created_at"], name="taskboard_task_board")]

    def __str__(self) -> str:
        return self.title


class Sandbox(models.Model):
    """An isolated place where a task's agent works: a directory (local) or a cloud VM (e2b).
    Destroyed when its task ends, or by the reaper once idle too long or orphaned."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="sandboxes")
    agent = models.ForeignKey("agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    task = models.ForeignKey(Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="sandboxes")
    run = models.ForeignKey("runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    provider = models.CharField(max_length=16, help_text='e.g. "local" or "e2b".')
    external_id = models.CharField(max_length=200, blank=True, default="", help_text="The provider's id for it.")
    status = models.CharField(max_length=16, choices=SandboxStatus.choices, default=SandboxStatus.CREATING)
    repository_url = models.CharField(max_length=500, blank=True, default="")
    branch = models.CharField(max_length=200, blank=True, default="")
    limits = models.JSONField(default=dict, blank=True, help_text='e.g. {"cpu_seconds": 60, "memory_mb": 1024}.')
    last_error = models.TextField(blank=True, default="")
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0, help_text="What the provider charged.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, help_text="The idle timeout counts from here.")
    destroyed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        # Serves the reaper: live sandboxes ("status IN (...)") by last use.
        indexes = [models.Index(fields=["status", "last_used_at"], name="taskboard_sandbox_live")]

    def __str__(self) -> str:
        return f"{self.provider} sandbox {self.external_id or self.pk}"

    @property
    def seconds_alive(self) -> float | None:
        if self.destroyed_at is None:
            return None
        return (self.destroyed_at - self.created_at).total_seconds()


class GitOperation(models.Model):
    """One git step a task took in its sandbox (clone, branch, commit, push) or the pull request
    it opened, with its outcome."""

    id = models.BigAutoField(primary_key=True)
    sandbox = models.ForeignKey(Sandbox, on_delete=models.CASCADE, related_name="git_operations")
    task = models.ForeignKey(Task, null=True, blank=True, on_delete=models.CASCADE, related_name="git_operations")
    kind = models.CharField(max_length=16, choices=GitOperationKind.choices)
    status = models.CharField(max_length=16, choices=GitOperationStatus.choices, default=GitOperationStatus.RUNNING)
    detail = models.JSONField(default=dict, blank=True, help_text='e.g. {"branch": "task/fix-typo-1a2b"}.')
    commit_sha = models.CharField(max_length=64, blank=True, default="")
    error = models.TextField(blank=True, default="")
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["started_at", "id"]

    def __str__(self) -> str:
        return f"{self.kind} ({self.status})"
