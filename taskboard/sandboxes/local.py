"""Local sandboxes: one directory each, commands run as subprocesses with a time limit, output caps,
resource limits (setrlimit) and a scrubbed environment. Not a security boundary against hostile
code (use e2b for that): it keeps an agent's commands away from the server's secrets and bounded."""

import os
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

from django.conf import settings

from .base import ExecResult, Limits, SandboxError, SandboxProvider

#: The only variables a command sees, besides HOME and what the caller adds for one command.
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "GIT_TERMINAL_PROMPT": "0"}
MAX_FILE_BYTES = 1_000_000


def root() -> Path:
    return Path(settings.SPARKOPS_SANDBOX_ROOT)


class LocalProvider(SandboxProvider):
    name = "local"
    label = "Local directory and subprocesses"

    def create(self, *, sandbox_id: str, limits: Limits) -> str:
        # The directory is named by our row, written before it: the reaper can always match the two.
        base = root() / sandbox_id
        for part in ("work", "home", "out"):
            (base / part).mkdir(parents=True, exist_ok=True)
        return sandbox_id

    def _base(self, external_id: str) -> Path:
        base = root() / external_id
        if not external_id or "/" in external_id or not (base / "work").is_dir():
            raise SandboxError(f"Sandbox {external_id!r} does not exist.")
        return base

    def exec(self, external_id: str, argv: list[str], *, env: dict | None = None, limits: Limits) -> ExecResult:
        base = self._base(external_id)
        environment = {**BASE_ENV, "HOME": str(base / "home"), **(env or {})}
        started = time.monotonic()
        out_path, err_path = base / "out" / "stdout", base / "out" / "stderr"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            try:
                process = subprocess.Popen(  # noqa: S603 - running the agent's command, bounded, is the point
                    argv,
                    cwd=base / "work",
                    env=environment,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,  # its own process group: a timeout kills all it started
                    preexec_fn=lambda: _limit(limits),
                )
            except OSError as exc:
                raise SandboxError(f"Cannot run {argv[0]!r}: {exc.strerror}.") from exc
            # Noted so destroy() can stop it even if this worker dies mid-command (kill -9).
            with open(base / "out" / "pids", "a") as pids:
                pids.write(f"{process.pid}\n")
            timed_out = _wait(process, limits.timeout)
        stdout, cut_out = _read_capped(out_path, limits.output_bytes)
        stderr, cut_err = _read_capped(err_path, limits.output_bytes)
        return ExecResult(
            exit_code=process.returncode,
            stdout=stdout,
            stderr=stderr,
            seconds=time.monotonic() - started,
            timed_out=timed_out,
            truncated=cut_out or cut_err,
        )

    def _path(self, external_id: str, path: str) -> Path:
        work = (self._base(external_id) / "work").resolve()
        target = (work / path).resolve()
        # resolve() follows symlinks: a link the agent made pointing out of the sandbox is refused.
        if target != work and work not in target.parents:
            raise SandboxError(f"{path!r} is outside the sandbox's work directory.")
        return target

    def read_file(self, external_id: str, path: str, *, limits: Limits) -> str:
        target = self._path(external_id, path)
        if not target.is_file():
            raise SandboxError(f"No file {path!r} in the sandbox.")
        with open(target, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise SandboxError(f"{path!r} is larger than {MAX_FILE_BYTES} bytes.")
        return data.decode("utf-8", errors="replace")

    def write_file(self, external_id: str, path: str, content: str, *, limits: Limits) -> None:
        target = self._path(external_id, path)
        if len(content.encode()) > limits.file_size_mb * 1024 * 1024:
            raise SandboxError(f"{path!r} would be larger than {limits.file_size_mb} MB.")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)

    def destroy(self, external_id: str) -> None:
        if external_id and "/" not in external_id:
            _stop_commands(root() / external_id)
            shutil.rmtree(root() / external_id, ignore_errors=True)

    def exists(self, external_id: str) -> bool:
        return bool(external_id) and "/" not in external_id and (root() / external_id).is_dir()

    def orphans(self, known: set[str]) -> list[str]:
        if not root().is_dir():
            return []
        return [entry.name for entry in root().iterdir() if entry.is_dir() and entry.name not in known]


def _limit(limits: Limits) -> None:
    """In the child, before exec: what its process may use."""
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
    memory = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    size = limits.file_size_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _wait(process: subprocess.Popen, timeout: float) -> bool:
    try:
        process.wait(timeout=timeout)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return True


def _stop_commands(base: Path) -> None:
    """Kill the process groups of commands still running in the sandbox: those of a worker that
    died mid-command outlive it (each runs in its own session). A pid is only killed while its
    process still works in this sandbox, so a recycled pid is left alone."""
    try:
        pids = (base / "out" / "pids").read_text().split()
    except OSError:
        return
    for pid in map(int, pids):
        try:
            if Path(os.readlink(f"/proc/{pid}/cwd")).is_relative_to(base):
                os.killpg(pid, signal.SIGKILL)
        except OSError:
            continue  # gone already, or not ours


def _read_capped(path: Path, cap: int) -> tuple[str, bool]:
    with open(path, "rb") as handle:
        data = handle.read(cap + 1)
    return data[:cap].decode("utf-8", errors="replace"), len(data) > cap
