"""What every sandbox provider speaks. Providers create, use and destroy one isolated place to work;
they never touch sandbox rows (the services do)."""

import abc
import shlex
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Limits:
    """What one sandbox may use. ``timeout`` bounds each command; the others bound its process."""

    timeout: float = 120.0
    cpu_seconds: int = 120
    memory_mb: int = 2048
    file_size_mb: int = 200
    output_bytes: int = 64_000

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Limits":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def as_dict(self) -> dict:
        return asdict(self)


class SandboxError(Exception):
    """A failed sandbox call; ``permanent`` says whether trying again could help."""

    def __init__(self, message: str, *, permanent: bool = True):
        super().__init__(message)
        self.permanent = permanent


class SandboxProvider(abc.ABC):
    name: str = ""
    label: str = ""

    def usd_per_second(self) -> float:
        """What a second of one sandbox costs; recorded per sandbox when destroyed."""
        return 0.0

    def available(self) -> str:
        """Why this provider cannot be used here ("" when it can), e.g. a missing API key."""
        return ""

    @abc.abstractmethod
    def create(self, *, sandbox_id: str, limits: Limits) -> str:
        """Make a sandbox for our row ``sandbox_id``; returns the provider's id for it."""

    @abc.abstractmethod
    def exec(self, external_id: str, argv: list[str], *, env: dict | None = None, limits: Limits) -> ExecResult:
        """Run one command in the sandbox's work directory, within ``limits``. ``env`` adds
        variables to the command's own (scrubbed) environment and is never logged."""

    @abc.abstractmethod
    def read_file(self, external_id: str, path: str, *, limits: Limits) -> str:
        """A text file under the work directory. Raises SandboxError when missing or outside it."""

    @abc.abstractmethod
    def write_file(self, external_id: str, path: str, content: str, *, limits: Limits) -> None:
        """Write a text file under the work directory, making folders as needed."""

    @abc.abstractmethod
    def destroy(self, external_id: str) -> None:
        """Remove the sandbox and all it holds; destroying a gone sandbox does nothing."""

    @abc.abstractmethod
    def exists(self, external_id: str) -> bool:
        """Whether the provider still holds the sandbox."""

    def keep_alive(self, external_id: str, seconds: float) -> None:
        """Push the provider's own expiry ``seconds`` from now, where it has one."""
        return None

    def orphans(self, known: set[str]) -> list[str]:
        """Ids the provider holds that are not in ``known`` (our live rows), where it can list them."""
        return []

    def work_dir(self) -> str:
        """Where commands run and relative paths point, inside the sandbox."""
        return "."


def command_line(argv: list[str]) -> str:
    return " ".join(shlex.quote(part) for part in argv)
