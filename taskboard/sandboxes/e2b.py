"""E2B cloud sandboxes through the official ``e2b`` SDK, with ``E2B_API_KEY``. Each sandbox is
created with E2B's own timeout set to our idle timeout, so one we lose track of (a worker killed
mid-task) stops on E2B's side too; the reaper also kills it."""

from django.conf import settings

from .base import ExecResult, Limits, SandboxError, SandboxProvider, command_line

WORK_DIR = "/home/user/work"


def _sdk():
    import e2b  # the SDK is imported when used: the embedded default never loads it

    return e2b


class E2BProvider(SandboxProvider):
    name = "e2b"
    label = "E2B cloud sandbox"

    def usd_per_second(self) -> float:
        return settings.SPARKOPS_E2B_USD_PER_SECOND

    def available(self) -> str:
        return "" if settings.SPARKOPS_E2B_API_KEY else "E2B_API_KEY is not set."

    def _opts(self) -> dict:
        if not settings.SPARKOPS_E2B_API_KEY:
            raise SandboxError("The e2b provider needs E2B_API_KEY.")
        opts = {"api_key": settings.SPARKOPS_E2B_API_KEY, "request_timeout": 30}
        if settings.SPARKOPS_E2B_DOMAIN:
            opts["domain"] = settings.SPARKOPS_E2B_DOMAIN
        if settings.SPARKOPS_E2B_API_URL:
            opts["api_url"] = settings.SPARKOPS_E2B_API_URL
        return opts

    def create(self, *, sandbox_id: str, limits: Limits) -> str:
        e2b = _sdk()
        try:
            sandbox = e2b.Sandbox.create(
                template=settings.SPARKOPS_E2B_TEMPLATE or None,
                timeout=int(settings.SPARKOPS_SANDBOX_IDLE_SECONDS),
                metadata={"sparkops_sandbox": sandbox_id},
                **self._opts(),
            )
        except e2b.SandboxException as exc:
            raise SandboxError(f"E2B refused to create a sandbox: {exc}", permanent=False) from exc
        return sandbox.sandbox_id

    def _connect(self, external_id: str):
        e2b = _sdk()
        try:
            return e2b.Sandbox.connect(external_id, **self._opts())
        except e2b.SandboxException as exc:
            raise SandboxError(f"E2B sandbox {external_id} is gone: {exc}") from exc

    def exec(self, external_id: str, argv: list[str], *, env: dict | None = None, limits: Limits) -> ExecResult:
        e2b = _sdk()
        sandbox = self._connect(external_id)
        try:
            result = sandbox.commands.run(command_line(argv), envs=env or {}, cwd=WORK_DIR, timeout=limits.timeout)
        except e2b.CommandExitException as exc:
            result = exc
        except e2b.TimeoutException:
            return ExecResult(exit_code=-9, stdout="", stderr="", seconds=limits.timeout, timed_out=True)
        cap = limits.output_bytes
        stdout, stderr = result.stdout or "", result.stderr or ""
        return ExecResult(
            exit_code=result.exit_code,
            stdout=stdout[:cap],
            stderr=stderr[:cap],
            seconds=0.0,
            truncated=len(stdout) > cap or len(stderr) > cap,
        )

    def read_file(self, external_id: str, path: str, *, limits: Limits) -> str:
        e2b = _sdk()
        try:
            return self._connect(external_id).files.read(_inside(path))
        except e2b.NotFoundException as exc:
            raise SandboxError(f"No file {path!r} in the sandbox.") from exc

    def write_file(self, external_id: str, path: str, content: str, *, limits: Limits) -> None:
        self._connect(external_id).files.write(_inside(path), content)

    def destroy(self, external_id: str) -> None:
        if external_id:
            _sdk().Sandbox.kill(external_id, **self._opts())  # False when already gone: fine

    def exists(self, external_id: str) -> bool:
        e2b = _sdk()
        try:
            e2b.Sandbox.get_info(external_id, **self._opts())
        except e2b.NotFoundException:
            return False
        return True

    def keep_alive(self, external_id: str, seconds: float) -> None:
        _sdk().Sandbox.set_timeout(external_id, int(seconds), **self._opts())

    def work_dir(self) -> str:
        return WORK_DIR


def _inside(path: str) -> str:
    if path.startswith("/") or ".." in path.split("/"):
        raise SandboxError(f"{path!r} is outside the sandbox's work directory.")
    return f"{WORK_DIR}/{path}"
