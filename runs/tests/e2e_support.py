"""End-to-end support: a real Celery worker process on the test database, and an
OpenAI-compatible server on 127.0.0.1 whose behaviour each prompt chooses.

Prompt markers the fake provider understands (anywhere in the last user message):
- ``SLOW=<seconds>``: answer after that long;
- ``FAIL_ONCE=<name>``: answer 500 the first time this name is seen, normally after;
- ``CALL=<tool>``: ask for that tool (with ``{"expression": "6*7"}``) until a tool result comes back;
- ``KILL_CALLER``: SIGKILL the process that sent the request (a call that kills its worker).
Every answer is "answer to: <prompt>" with token counts.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


class LocalServer:
    """A threaded HTTP server on a free port of 127.0.0.1, serving until stop()."""

    def serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class FakeOpenAI(LocalServer):
    def __init__(self) -> None:
        self.prompts: Counter[str] = Counter()  # prompt text -> completions requested
        self.failed_once: set[str] = set()
        self.bodies: list[dict] = []  # every request body, in order
        self.serve(_handler(self))

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def answer(self, body: dict) -> tuple[int, dict, float]:
        messages = body["messages"]
        prompt = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        has_tool_result = any(m["role"] == "tool" for m in messages)
        with self.lock:
            self.bodies.append(body)
            self.prompts[prompt] += 1
            fail = re.search(r"FAIL_ONCE=(\w+)", prompt)
            if fail and fail[1] not in self.failed_once:
                self.failed_once.add(fail[1])
                return 500, {"error": {"message": "upstream hiccup"}}, 0.0
        delay = float(m[1]) if (m := re.search(r"SLOW=([\d.]+)", prompt)) else 0.0
        call = re.search(r"CALL=(\w+)", prompt)
        message = {"role": "assistant", "content": f"answer to: {prompt}"}
        if call and not has_tool_result:
            arguments = json.dumps({"expression": "6*7"})
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": call[1], "arguments": arguments}}
                ],
            }
        usage = {"prompt_tokens": 100, "completion_tokens": 20}
        return 200, {"choices": [{"message": message, "finish_reason": "stop"}], "usage": usage}, delay


def pid_of_client(client_port: int, server_port: int) -> int | None:
    """The local process holding the client end of a TCP connection to us, found the way ``ss -p``
    does: the socket's inode in /proc/net/tcp, then the process with that inode among its fds."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(address.rsplit(":", 1)[1], 16) for address in fields[1:3])
        if (local, remote) == (client_port, server_port):
            inode = fields[9]
    for fd in Path("/proc").glob("[0-9]*/fd/[0-9]*"):
        try:
            if inode and os.readlink(fd) == f"socket:[{inode}]":
                return int(fd.parts[2])
        except OSError:
            continue  # another user's process, or one that just exited
    return None


def _handler(fake: FakeOpenAI):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if "KILL_CALLER" in json.dumps(body["messages"][-1]):
                with fake.lock:
                    fake.bodies.append(body)
                    fake.prompts[body["messages"][-1]["content"]] += 1
                pid = pid_of_client(self.client_address[1], fake.httpd.server_address[1])
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                return  # no answer: the caller is dead
            status, payload, delay = fake.answer(body)
            time.sleep(delay)
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args) -> None:
            pass

    return Handler


class SideEffects(LocalServer):
    """An HTTP endpoint with a side effect, for HTTP tools: it counts every request (the effect)
    and answers after ``delay`` seconds, so a test can act while a call is in flight."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.requests: list[dict] = []
        self.serve(_effect_handler(self))

    @property
    def url(self) -> str:
        return f"{self.origin}/effect"


def _effect_handler(effects: SideEffects):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            with effects.lock:
                effects.requests.append(body)
                count = len(effects.requests)
            time.sleep(effects.delay)
            raw = json.dumps({"done": count}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args) -> None:
            pass

    return Handler


def database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def process_env() -> dict[str, str]:
    """The environment of a process of ours (worker, web server) on the test database."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "sparkops.settings.test",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SPARKOPS_HTTP_ALLOWED_NETWORKS": "127.0.0.1/32",
        "SPARKOPS_LEASE_MARGIN_SECONDS": "1",
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ThrowawayRedis:
    """A ``redis-server`` of the test's own, on a free port and without persistence, that a test
    may kill, restart (empty, on the same port), freeze and thaw. Never the shared Redis."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "ThrowawayRedis":
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--dir", str(self.directory)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        self.thaw()
        self.process.kill()
        self.process.wait(timeout=10)

    def freeze(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.kill()


class Worker:
    """``celery worker`` as a real process group (prefork, 2 children) on the test database."""

    def __init__(self, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self.env = env or {}  # on top of process_env(), e.g. another REDIS_URL
        self.process: subprocess.Popen | None = None

    def start(self) -> "Worker":
        env = {**process_env(), **self.env}
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "sparkops",
            "worker",
            "-P",
            "prefork",
            "-c",
            "2",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=INFO",
        ]
        log = self.log_path.open("a")
        self.process = subprocess.Popen(  # noqa: S603 - our own worker, fixed arguments
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready." in self.log_path.read_text():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """kill -9 of the whole worker: parent and children, no chance to ack or clean up."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def start_workers(log_dir: Path, count: int) -> list[Worker]:
    """``count`` workers (2 children each), started side by side so none gets a head start of a
    whole boot; each logs to ``<log_dir>/worker-<n>.log``."""
    workers = [Worker(log_dir / f"worker-{n}.log") for n in range(count)]
    errors: list[Exception] = []

    def start(worker: Worker) -> None:
        try:
            worker.start()
        except Exception as exc:  # noqa: BLE001 - reported below, after every worker is stopped
            errors.append(exc)

    threads = [threading.Thread(target=start, args=[worker]) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        stop_workers(workers)
        raise RuntimeError(f"a worker did not start: {errors[0]}")
    return workers


def stop_workers(workers: list[Worker]) -> None:
    threads = [threading.Thread(target=worker.stop) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def worker_logs(workers: list[Worker], tail: int = 3000) -> str:
    """The end of each worker's log, for a failure message."""
    return "\n".join(
        f"--- {worker.log_path.name}\n{worker.log_path.read_text()[-tail:] if worker.log_path.exists() else ''}"
        for worker in workers
    )


def reply(handler: BaseHTTPRequestHandler, status: int, raw: bytes, content_type: str = "application/json") -> None:
    """Answer a local server's request with ``raw`` as the whole body."""
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(raw)))
    handler.end_headers()
    handler.wfile.write(raw)
