"""A task end to end, on the embedded default (SQLite) and on PostgreSQL: the engine runs the
system task workflow, the agent writes and commits in a local sandbox holding a clone of a local
bare repository, the branch is pushed there and a pull request opened on a fake GitHub."""

import pytest

from agents.models import Agent
from runs.choices import RunStatus
from sparkops.roles import Role
from taskboard import services
from taskboard.choices import GitOperationKind, GitOperationStatus, SandboxStatus, TaskStatus
from taskboard.models import GitOperation, Sandbox, Task
from taskboard.sandboxes.local import root

from .support import TOKEN, WRITE_AND_COMMIT, FakeGitHub, bare_repository, branches, coder, file_at, github_credential


@pytest.fixture
def sandbox_root(settings, tmp_path):
    settings.SPARKOPS_SANDBOX_ROOT = str(tmp_path / "sandboxes")
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    settings.SPARKOPS_TASK_LOCAL_REPOSITORIES = True
    return tmp_path / "sandboxes"


@pytest.fixture
def github():
    fake = FakeGitHub()
    yield fake
    fake.stop()


@pytest.fixture
def board(team, engine, sandbox_root, tmp_path, github):
    bare = bare_repository(tmp_path / "remote")
    agent = coder(team.project)
    credential = github_credential(team.project, f"{github.origin}/api/v3")
    return bare, agent, credential


def start(team, agent, bare, description=WRITE_AND_COMMIT):
    response = team.client(Role.DEVELOPER).post(
        f"/api/v1/agents/{agent.pk}/start-task",
        {"title": "Say hello", "description": description, "repository_url": str(bare), "priority": "high"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return Task.objects.get(pk=response.json()["id"])


def test_a_task_clones_commits_pushes_and_opens_a_pull_request(team, board, github, sandbox_root):
    bare, agent, _ = board
    task = start(team, agent, bare)

    task.refresh_from_db()
    assert task.status == TaskStatus.REVIEW, task.error
    assert task.pull_request_url == "https://github.example/acme/shop/pull/7"
    assert task.branch.startswith("task/say-hello-")
    # The commit is in the bare repository, on the task's branch, with the agent's file.
    pushed = branches(bare)
    assert task.branch in pushed
    assert pushed[task.branch] != pushed["main"]
    assert file_at(bare, task.branch, "hello.txt") == "hello from the agent\n"
    # The pull request GitHub was asked for: head, base, title, and the token as a bearer.
    (request,) = github.requests
    assert request["path"] == "/api/v3/repos/acme/shop/pulls"
    assert request["body"]["head"] == task.branch
    assert request["body"]["base"] == "main"
    assert request["body"]["title"] == "Say hello"
    assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
    # Each git step recorded; the commit's SHA is the pushed one.
    operations = list(GitOperation.objects.filter(task=task).values_list("kind", "status"))
    assert operations == [
        (GitOperationKind.CLONE, GitOperationStatus.SUCCEEDED),
        (GitOperationKind.CHECKOUT_BRANCH, GitOperationStatus.SUCCEEDED),
        (GitOperationKind.COMMIT, GitOperationStatus.SUCCEEDED),
        (GitOperationKind.PUSH, GitOperationStatus.SUCCEEDED),
        (GitOperationKind.OPEN_PR, GitOperationStatus.SUCCEEDED),
    ]
    assert GitOperation.objects.get(task=task, kind="push").commit_sha == pushed[task.branch]
    # The sandbox is gone, its lifetime recorded; the agent is idle; the run succeeded.
    (sandbox,) = Sandbox.objects.filter(task=task)
    assert sandbox.status == SandboxStatus.DESTROYED
    assert sandbox.destroyed_at is not None
    assert not (sandbox_root / str(sandbox.pk)).exists()
    assert Agent.objects.get(pk=agent.pk).work_status == "idle"
    assert task.runs.get().status == RunStatus.SUCCEEDED


def test_the_token_lands_in_no_repository_config_log_or_record(team, board, sandbox_root):
    bare, agent, _ = board
    task = start(team, agent, bare)
    config = (bare / "config").read_text()
    assert TOKEN not in config
    run = task.runs.get()
    assert TOKEN not in str(list(run.events.values_list("payload", flat=True)))
    assert TOKEN not in str(list(GitOperation.objects.values_list("detail", "error")))


def test_an_unknown_repository_fails_the_clone_with_a_clear_error_and_leaves_nothing(
    team, board, sandbox_root, tmp_path
):
    _, agent, _ = board
    task = start(team, agent, tmp_path / "nowhere" / "missing.git")
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED
    clone = GitOperation.objects.get(task=task)
    assert (clone.kind, clone.status) == (GitOperationKind.CLONE, GitOperationStatus.FAILED)
    assert "Cloning" in clone.error
    assert "does not exist" in clone.error
    assert task.error == clone.error
    assert Sandbox.objects.get(task=task).status == SandboxStatus.DESTROYED
    assert list(sandbox_root.iterdir()) == []


def test_a_refused_push_fails_the_task_and_leaves_no_branch(team, board, sandbox_root):
    bare, agent, _ = board
    hook = bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'pushes are frozen' >&2\nexit 1\n")
    hook.chmod(0o755)
    task = start(team, agent, bare)
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED
    push = GitOperation.objects.get(task=task, kind="push")
    assert push.status == GitOperationStatus.FAILED
    assert "pushes are frozen" in push.error
    assert set(branches(bare)) == {"main"}
    assert not GitOperation.objects.filter(task=task, kind="open_pr").exists()
    assert list(sandbox_root.iterdir()) == []


def test_a_pull_request_refused_with_422_fails_and_deletes_the_pushed_branch(team, board, github, sandbox_root):
    bare, agent, _ = board
    github.status = 422
    task = start(team, agent, bare)
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED
    pr = GitOperation.objects.get(task=task, kind="open_pr")
    assert pr.status == GitOperationStatus.FAILED
    assert pr.error == "GitHub answered 422: Validation Failed; A pull request already exists."
    assert set(branches(bare)) == {"main"}
    assert task.pull_request_url == ""
    assert list(sandbox_root.iterdir()) == []


def test_cancel_while_the_task_waits_for_an_approval_destroys_its_sandbox(team, board, sandbox_root):
    bare, agent, _ = board
    agent.tools.filter(kind="git_commit").update(requires_approval=True)
    task = start(team, agent, bare)
    task.refresh_from_db()
    run = task.runs.get()
    assert (task.status, run.status) == (TaskStatus.IN_PROGRESS, RunStatus.WAITING_APPROVAL)
    (sandbox,) = Sandbox.objects.filter(task=task)
    assert sandbox.status == SandboxStatus.READY
    assert (sandbox_root / str(sandbox.pk)).is_dir()
    assert Agent.objects.get(pk=agent.pk).current_task_id == task.pk

    response = team.client(Role.DEVELOPER).post(f"/api/v1/tasks/{task.pk}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    sandbox.refresh_from_db()
    assert sandbox.status == SandboxStatus.DESTROYED
    assert not (sandbox_root / str(sandbox.pk)).exists()
    run.refresh_from_db()
    assert run.status in (RunStatus.CANCELLING, RunStatus.CANCELLED)
    assert Agent.objects.get(pk=agent.pk).work_status == "idle"
    assert set(branches(bare)) == {"main"}


def test_the_reaper_destroys_an_idle_sandbox_and_an_orphan_directory(team, board, sandbox_root, settings):
    _, agent, _ = board
    live = services.sandbox_create(project=team.project, agent=agent)
    (sandbox_root / "orphan-dir" / "work").mkdir(parents=True)
    settings.SPARKOPS_SANDBOX_IDLE_SECONDS = 0
    counts = services.sandboxes_reap()
    live.refresh_from_db()
    assert live.status == SandboxStatus.DESTROYED
    assert counts == {"sandboxes": 1, "orphans": 1}
    assert list(root().iterdir()) == []


def test_commands_the_agent_runs_are_committed_for_it_when_it_does_not_commit(team, board, sandbox_root):
    bare, agent, _ = board
    script = '[[tool:sandbox_exec {"command": "echo made > made.txt && ls"}]] [[tool:read_file {"path": "README.md"}]]'
    task = start(team, agent, bare, description=script)
    task.refresh_from_db()
    assert task.status == TaskStatus.REVIEW, task.error
    assert file_at(bare, task.branch, "made.txt") == "made\n"
    calls = {e.payload["tool"]: e.payload for e in task.runs.get().events.filter(type="tool.call")}
    assert calls["sandbox_exec"]["output"]["stdout"] == "README.md\nmade.txt\n"
    assert calls["read_file"]["output"] == "shop\n"
    commit = GitOperation.objects.get(task=task, kind="commit")
    assert commit.commit_sha == branches(bare)[task.branch]


def test_a_repository_on_a_private_address_is_refused_before_git_connects(team, board, sandbox_root, settings):
    _, agent, _ = board
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = []
    task = start(team, agent, "https://127.0.0.1/acme/shop.git")
    task.refresh_from_db()
    clone = GitOperation.objects.get(task=task)
    assert clone.status == GitOperationStatus.FAILED
    assert "refused" in clone.error
    assert "non-public address" in clone.error
    assert task.status == TaskStatus.FAILED
    assert list(sandbox_root.iterdir()) == []
