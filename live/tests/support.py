"""A real web server (uvicorn, as shipped) on the test database, and an SSE client reading it."""

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from runs.tests.e2e_support import ROOT, database_url, free_port, process_env


class WebServer:
    def __init__(self, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.database_url = database_url()
        command = [sys.executable, "-m", "uvicorn", "sparkops.asgi:application", "--port", str(self.port)]
        command += ["--lifespan", "off", "--log-level", "warning", "--timeout-graceful-shutdown", "1"]
        self.process = subprocess.Popen(  # noqa: S603 - our own server, fixed arguments
            command,
            cwd=ROOT,
            env={**process_env(), **(env or {})},
            stdout=log_path.open("a"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.origin}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"web server did not start: {log_path.read_text()[-2000:]}")

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        _wait_for_its_sessions_to_end(self.database_url)


def _wait_for_its_sessions_to_end(url: str, timeout: float = 10) -> None:
    """PostgreSQL ends a dead client's sessions a moment after it exits; the test database can
    be dropped only then. (A connection of our own: Django's is closed to fixtures by now.)"""
    sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline and conn.execute(sql).fetchone()[0] > 1:  # ours: the test's own
            time.sleep(0.1)


@dataclass
class Frame:
    id: str | None = None
    event: str | None = None
    data: dict | None = None
    comment: str | None = None


@dataclass
class Listener:
    """Reads an SSE response in a thread of its own, frame by frame, until closed."""

    url: str
    headers: dict = field(default_factory=dict)
    frames: list[Frame] = field(default_factory=list)
    status: int | None = None
    error: Exception | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        if not self._opened.wait(15):
            raise RuntimeError("stream did not open")

    def _read(self) -> None:
        client = httpx.Client(timeout=httpx.Timeout(30, read=None))
        try:
            with client.stream("GET", self.url, headers=self.headers) as response:
                self._response = response
                self.status = response.status_code
                self._opened.set()
                frame = Frame()
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    frame = self._line(frame, line)
        except (httpx.HTTPError, OSError, RuntimeError) as error:
            self.error = None if self._stop.is_set() else error
        finally:
            self._opened.set()
            client.close()

    def _line(self, frame: Frame, line: str) -> Frame:
        if line == "":
            if frame != Frame():
                self.frames.append(frame)
            return Frame()
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            frame.comment = value
        elif name == "id":
            frame.id = value
        elif name == "event":
            frame.event = value
        elif name == "data":
            frame.data = json.loads(value)
        return frame

    @property
    def events(self) -> list[Frame]:
        return [f for f in list(self.frames) if f.event]

    @property
    def last_id(self) -> str | None:
        ids = [f.id for f in list(self.frames) if f.id]
        return ids[-1] if ids else None

    def wait_for(self, check, timeout: float = 10, what: str = "frames") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check(self):
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; got {self.frames}")

    def close(self) -> None:
        """Hang up, as a client that goes away does; frames after this are not kept."""
        self._stop.set()
        self._response.close()  # the server sees the connection go
        self._thread.join(timeout=5)
