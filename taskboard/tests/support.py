# ruff: noqa: S603, S607 - git on repositories the test made
"""Test helpers: a local bare repository, a fake GitHub REST API on 127.0.0.1, and a coding agent
(echo, scripted through its prompt) with the sandbox tools."""

import json
import subprocess
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from agents.models import Agent, ProviderCredential, Tool
from agents.services import tool_save
from runs.tests.e2e_support import LocalServer
from runs.tests.factories import echo_agent

TOKEN = "ghp_testtoken0123456789secret"


def bare_repository(root: Path, name: str = "acme/shop.git") -> Path:
    """A bare repository at ``root/name`` with one commit on main."""
    bare, seed = root / name, root / "seed"
    bare.parent.mkdir(parents=True, exist_ok=True)
    git = ["git", "-c", "user.name=T", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "--quiet", "--bare", str(bare)], check=True)
    subprocess.run([*git, "init", "--quiet", str(seed)], check=True)
    (seed / "README.md").write_text("shop\n")
    subprocess.run([*git, "-C", str(seed), "add", "."], check=True)
    subprocess.run([*git, "-C", str(seed), "commit", "--quiet", "-m", "first"], check=True)
    subprocess.run([*git, "-C", str(seed), "push", "--quiet", str(bare), "HEAD:refs/heads/main"], check=True)
    return bare


def branches(bare: Path) -> dict[str, str]:
    out = subprocess.run(["git", "-C", str(bare), "for-each-ref", "--format=%(refname:short) %(objectname)"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return dict(line.split() for line in out.splitlines())


def file_at(bare: Path, ref: str, path: str) -> str:
    return subprocess.run(["git", "-C", str(bare), "show", f"{ref}:{path}"], capture_output=True, text=True).stdout


class FakeGitHub(LocalServer):
    """POST /repos/{owner}/{repo}/pulls: 201 with a PR URL, or ``status`` and a GitHub-shaped error."""

    def __init__(self, status: int = 201) -> None:
        self.status = status
        self.requests: list[dict] = []
        self.serve(_handler(self))


def _handler(fake: FakeGitHub):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            if fake.status == 201:
                repository = self.path.split("/repos/")[1].removesuffix("/pulls")
                answer = {"number": 7, "html_url": f"https://github.example/{repository}/pull/7"}
            else:
                answer = {"message": "Validation Failed", "errors": [{"message": "A pull request already exists."}]}
            data = json.dumps(answer).encode()
            self.send_response(fake.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler


def sandbox_tool(project, kind: str, **fields) -> Tool:
    return tool_save(tool=Tool(project=project, name=kind, slug=kind, kind=kind, risk_class="write", **fields))


def coder(project, slug: str = "coder", **fields) -> Agent:
    """An echo agent with the four sandbox tools."""
    kinds = ["sandbox_exec", "read_file", "write_file", "git_commit"]
    return echo_agent(project, slug, tools=[sandbox_tool(project, kind) for kind in kinds], **fields)


def github_credential(project, api_url: str) -> ProviderCredential:
    credential = ProviderCredential(project=project, name="GitHub", provider="github", base_url=api_url)
    credential.set_secret(TOKEN)
    credential.full_clean()
    credential.save()
    return credential


WRITE_AND_COMMIT = (
    '[[tool:write_file {"path": "hello.txt", "content": "hello from the agent\\n"}]] '
    '[[tool:git_commit {"message": "Add hello.txt"}]]'
)
