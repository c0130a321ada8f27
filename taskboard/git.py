"""Git inside a sandbox, with the git CLI. The token reaches git only as an environment variable of
the one command that needs it, read by a credential helper: never in the repository's config, on a
command line or in what is logged (outputs are scrubbed of it besides)."""

from dataclasses import dataclass

from .sandboxes import ExecResult, Limits, SandboxProvider

TOKEN_VARIABLE = "SPARKOPS_GIT_TOKEN"  # noqa: S105 - the name of the variable, not a secret
# Reset any helper git would find, then answer from the variable. The helper's text holds no secret.
_HELPER = f'!f() {{ test "$1" = get && echo username=x-access-token && echo "password=${TOKEN_VARIABLE}"; }}; f'
AUTH = ["-c", "credential.helper=", "-c", f"credential.helper={_HELPER}"]


class GitFailed(Exception):
    """A git command that did not succeed; the message is safe to store and show."""


@dataclass(frozen=True)
class Workspace:
    """One sandbox as git sees it: its provider, its id there, its limits, and who commits."""

    provider: SandboxProvider
    external_id: str
    limits: Limits
    author: str = "Spark-Ops agent"
    email: str = "agent@sparkops.invalid"
    token: str = ""

    def git(self, *args: str, auth: bool = False) -> ExecResult:
        env = {
            "GIT_AUTHOR_NAME": self.author,
            "GIT_AUTHOR_EMAIL": self.email,
            "GIT_COMMITTER_NAME": self.author,
            "GIT_COMMITTER_EMAIL": self.email,
            "GIT_TERMINAL_PROMPT": "0",
        }
        if auth and self.token:
            env[TOKEN_VARIABLE] = self.token
        argv = ["git", *(AUTH if auth else []), *args]
        return self.provider.exec(self.external_id, argv, env=env, limits=self.limits)

    def checked(self, what: str, *args: str, auth: bool = False) -> str:
        result = self.git(*args, auth=auth)
        if not result.ok:
            detail = "timed out" if result.timed_out else (result.stderr or result.stdout).strip()
            raise GitFailed(self.scrub(f"{what} failed: {detail}"))
        return result.stdout.strip()

    def scrub(self, text: str) -> str:
        return text.replace(self.token, "***") if self.token else text


def clone(ws: Workspace, url: str, base_branch: str = "") -> dict:
    branch = ["--branch", base_branch] if base_branch else []
    ws.checked(f"Cloning {url}", "clone", "--quiet", *branch, "--", url, ".", auth=True)
    base = ws.checked("Reading the branch", "rev-parse", "--abbrev-ref", "HEAD")
    return {"base_branch": base, "base_sha": ws.checked("Reading HEAD", "rev-parse", "HEAD")}


def checkout_branch(ws: Workspace, branch: str) -> dict:
    ws.checked(f"Creating branch {branch}", "checkout", "--quiet", "-b", branch)
    return {"branch": branch}


def commit(ws: Workspace, message: str) -> str:
    """Commit everything changed; the new commit's SHA."""
    ws.checked("Staging", "add", "--all")
    if not ws.checked("Reading changes", "status", "--porcelain"):
        raise GitFailed("Nothing to commit: no file changed.")
    ws.checked("Committing", "commit", "--quiet", "-m", message)
    return ws.checked("Reading HEAD", "rev-parse", "HEAD")


def commits_since(ws: Workspace, base_sha: str) -> int:
    return int(ws.checked("Counting commits", "rev-list", "--count", f"{base_sha}..HEAD") or 0)


def push(ws: Workspace, branch: str) -> str:
    ws.checked(f"Pushing {branch}", "push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", auth=True)
    return ws.checked("Reading HEAD", "rev-parse", "HEAD")
