"""Sandbox providers. One contract, run against every provider: local always, e2b when
E2B_API_KEY is set (skipped otherwise, saying so). Then what only the local provider does (limits,
a scrubbed environment), and E2B's create, timeout and kill at the HTTP boundary (a local fake of
its API)."""

import json
import os
import threading
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from taskboard import sandboxes, services
from taskboard.models import Sandbox
from taskboard.sandboxes import Limits, SandboxError

QUICK = Limits(timeout=20, cpu_seconds=20, memory_mb=1024, file_size_mb=10, output_bytes=4000)


@pytest.fixture
def local_root(settings, tmp_path):
    settings.SPARKOPS_SANDBOX_ROOT = str(tmp_path / "sandboxes")
    return tmp_path / "sandboxes"


@pytest.fixture(params=["local", "e2b"])
def made(request, local_root, settings):
    """(provider, external id) of a fresh sandbox, destroyed after the test."""
    if request.param == "e2b":
        key = os.environ.get("E2B_API_KEY", "")
        if not key:
            pytest.skip("E2B_API_KEY is not set: the contract run against E2B is skipped.")
        settings.SPARKOPS_E2B_API_KEY = key
    provider = sandboxes.get(request.param)
    external_id = provider.create(sandbox_id=str(uuid.uuid4()), limits=QUICK)
    yield provider, external_id
    provider.destroy(external_id)


# ------------------------------------------------------------------------------
# The contract
# ------------------------------------------------------------------------------
def test_a_created_sandbox_exists_until_destroyed_and_destroying_twice_is_harmless(made):
    provider, external_id = made
    assert provider.exists(external_id)
    provider.destroy(external_id)
    provider.destroy(external_id)
    assert not provider.exists(external_id)


def test_commands_run_in_the_work_directory_with_their_output_and_exit_code(made):
    provider, external_id = made
    provider.write_file(external_id, "notes/hello.txt", "hi there\n", limits=QUICK)
    result = provider.exec(external_id, ["sh", "-c", "cat notes/hello.txt; echo oops >&2; exit 3"], limits=QUICK)
    assert (result.exit_code, result.stdout, result.stderr.strip(), result.ok) == (3, "hi there\n", "oops", False)
    assert provider.read_file(external_id, "notes/hello.txt", limits=QUICK) == "hi there\n"


def test_a_command_past_its_time_limit_is_stopped(made):
    provider, external_id = made
    started = time.monotonic()
    result = provider.exec(external_id, ["sh", "-c", "sleep 30"], limits=Limits(**{**QUICK.as_dict(), "timeout": 1}))
    assert result.timed_out
    assert not result.ok
    assert time.monotonic() - started < 15


def test_paths_outside_the_work_directory_are_refused(made):
    provider, external_id = made
    for path in ("../escape.txt", "/etc/passwd"):
        with pytest.raises(SandboxError, match="outside"):
            provider.write_file(external_id, path, "x", limits=QUICK)
        with pytest.raises(SandboxError, match="outside"):
            provider.read_file(external_id, path, limits=QUICK)


def test_reading_a_missing_file_is_a_clear_error(made):
    provider, external_id = made
    with pytest.raises(SandboxError, match=r"No file 'nope\.txt'"):
        provider.read_file(external_id, "nope.txt", limits=QUICK)


# ------------------------------------------------------------------------------
# Local: limits and a scrubbed environment
# ------------------------------------------------------------------------------
@pytest.fixture
def local(local_root):
    provider = sandboxes.get("local")
    external_id = provider.create(sandbox_id=str(uuid.uuid4()), limits=QUICK)
    return provider, external_id


def test_local_commands_see_none_of_the_servers_environment(local, monkeypatch):
    provider, external_id = local
    monkeypatch.setenv("DJANGO_SECRET_KEY", "server-secret")
    monkeypatch.setenv("DATABASE_URL", "postgres://secret@db/x")
    result = provider.exec(external_id, ["env"], limits=QUICK)
    names = {line.split("=", 1)[0] for line in result.stdout.splitlines()}
    assert "server-secret" not in result.stdout
    assert "DATABASE_URL" not in names
    assert names <= {"PATH", "LANG", "HOME", "GIT_TERMINAL_PROMPT", "PWD", "SHLVL", "_"}


def test_local_output_is_capped(local):
    provider, external_id = local
    result = provider.exec(external_id, ["sh", "-c", "yes | head -c 100000"], limits=QUICK)
    assert len(result.stdout) == QUICK.output_bytes
    assert result.truncated


def test_local_memory_and_cpu_limits_stop_a_greedy_command(local):
    provider, external_id = local
    small = Limits(**{**QUICK.as_dict(), "memory_mb": 64, "cpu_seconds": 1})
    memory = provider.exec(external_id, ["python3", "-c", "x = bytearray(512 * 1024 * 1024)"], limits=small)
    assert memory.exit_code != 0
    assert "MemoryError" in memory.stderr
    started = time.monotonic()
    cpu = provider.exec(external_id, ["python3", "-c", "while True: pass"], limits=small)
    assert cpu.exit_code != 0
    assert not cpu.timed_out
    assert time.monotonic() - started < 10


def test_local_timeout_kills_what_the_command_started_too(local, local_root):
    provider, external_id = local
    limits = Limits(**{**QUICK.as_dict(), "timeout": 0.5})
    result = provider.exec(external_id, ["sh", "-c", "sleep 60 & sleep 60"], limits=limits)
    assert result.timed_out
    group = int((local_root / external_id / "out" / "pids").read_text().split()[-1])
    assert not _group_alive(group, within=5)  # the whole group, the background sleep included


def _group_alive(group: int, within: float) -> bool:
    deadline = time.monotonic() + within  # a killed orphan is a zombie until init reaps it
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.05)
    return True


def test_a_symlink_pointing_out_of_the_sandbox_is_refused(local):
    provider, external_id = local
    provider.exec(external_id, ["ln", "-s", "/etc", "etc"], limits=QUICK)
    with pytest.raises(SandboxError, match="outside"):
        provider.read_file(external_id, "etc/hostname", limits=QUICK)


# ------------------------------------------------------------------------------
# E2B at the HTTP boundary
# ------------------------------------------------------------------------------
class FakeE2B:
    """E2B's control-plane API on 127.0.0.1: create, set timeout, kill."""

    def __init__(self, create_status: int = 201):
        self.requests: list[tuple[str, str, dict, str]] = []
        self.create_status = create_status
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict | None = None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append((self.command, self.path, body, self.headers.get("X-API-Key")))

            def do_POST(self):
                self._record()
                if self.path.endswith("/timeout"):
                    return self._answer(204)
                if fake.create_status != 201:
                    return self._answer(fake.create_status, {"code": fake.create_status, "message": "quota exceeded"})
                created = {"templateID": "base", "sandboxID": "sbx-1", "clientID": "c", "envdVersion": "0.2.0"}
                return self._answer(201, created)

            def do_DELETE(self):
                self._record()
                if self.path == "/sandboxes/sbx-1":
                    return self._answer(204)
                return self._answer(404, {"code": 404, "message": "sandbox not found"})

            def log_message(self, *args):
                pass

        return Handler

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def e2b_api(settings):
    fake = FakeE2B()
    settings.SPARKOPS_E2B_API_KEY = "e2b_test_key"
    settings.SPARKOPS_E2B_API_URL = fake.url
    settings.SPARKOPS_SANDBOX_IDLE_SECONDS = 600
    yield fake
    fake.stop()


def test_e2b_create_sends_our_timeout_and_id_with_the_key(e2b_api):
    external_id = sandboxes.get("e2b").create(sandbox_id="row-1", limits=QUICK)
    assert external_id == "sbx-1"
    ((method, path, body, key),) = e2b_api.requests
    assert (method, path, key) == ("POST", "/v2/sandboxes", "e2b_test_key")
    assert body["timeout"] == 600
    assert body["metadata"] == {"sparkops_sandbox": "row-1"}


def test_e2b_keep_alive_and_kill(e2b_api):
    provider = sandboxes.get("e2b")
    provider.keep_alive("sbx-1", 120)
    provider.destroy("sbx-1")
    provider.destroy("sbx-gone")  # 404: already gone, nothing to do
    assert [(m, p, b) for m, p, b, _ in e2b_api.requests] == [
        ("POST", "/sandboxes/sbx-1/timeout", {"timeout": 120}),
        ("DELETE", "/sandboxes/sbx-1", {}),
        ("DELETE", "/sandboxes/sbx-gone", {}),
    ]


def test_e2b_refusing_to_create_is_a_sandbox_error(e2b_api):
    e2b_api.create_status = 429
    with pytest.raises(SandboxError, match="E2B refused to create a sandbox"):
        sandboxes.get("e2b").create(sandbox_id="row-2", limits=QUICK)


def test_e2b_without_a_key_says_so(settings):
    settings.SPARKOPS_E2B_API_KEY = ""
    provider = sandboxes.get("e2b")
    assert provider.available() == "E2B_API_KEY is not set."
    with pytest.raises(SandboxError, match="needs E2B_API_KEY"):
        provider.create(sandbox_id="row-3", limits=QUICK)


def test_a_destroyed_e2b_sandbox_records_its_time_and_cost(e2b_api, team, settings):
    settings.SPARKOPS_E2B_USD_PER_SECOND = 0.0001
    sandbox = services.sandbox_create(project=team.project, provider="e2b")
    Sandbox.objects.filter(pk=sandbox.pk).update(created_at=timezone.now() - timedelta(seconds=100))
    sandbox.refresh_from_db()

    services.sandbox_destroy(sandbox=sandbox)

    sandbox.refresh_from_db()
    assert (sandbox.external_id, sandbox.status) == ("sbx-1", "destroyed")
    assert 100 <= sandbox.seconds_alive < 110
    assert Decimal("0.0100") <= sandbox.cost_usd < Decimal("0.0110")
    assert [m for m, *_ in e2b_api.requests] == ["POST", "DELETE"]
