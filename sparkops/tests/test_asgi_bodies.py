"""Request bodies as the ASGI server hands them to us: a chunked body has no Content-Length.

The test client always sends a Content-Length, so these talk to the ASGI application the way
uvicorn does (one http.request message per chunk), and one test to a real uvicorn process."""

import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.db import connection

from accounts.tests.factories import DEFAULT_PASSWORD, UserFactory
from sparkops.asgi import application

ROOT = Path(__file__).resolve().parents[2]
LOGIN = "/api/v1/auth/login"


def scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


@async_to_sync
async def call(path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, dict]:
    """POST ``chunks`` as separate body messages, as a server does with a chunked upload."""
    pending = [
        {"type": "http.request", "body": chunk, "more_body": n < len(chunks) - 1} for n, chunk in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive():
        if pending:
            return pending.pop(0)
        await asyncio.Future()  # the client stays connected until the response is sent

    async def send(message):
        sent.append(message)

    default = [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")]
    # Bounded: an app that waits for a body the client never sends would otherwise hang the test.
    await asyncio.wait_for(application(scope("POST", path, default if headers is None else headers), receive, send), 10)
    status = sent[0]["status"]
    body = b"".join(message.get("body", b"") for message in sent[1:])
    return status, json.loads(body)


def login_body(email: str) -> bytes:
    return json.dumps({"email": email, "password": DEFAULT_PASSWORD}).encode()


@pytest.mark.django_db(transaction=True)
def test_a_chunked_json_body_under_the_limit_is_read():
    user = UserFactory()
    body = login_body(user.email)
    status, answer = call(LOGIN, [body[:10], body[10:25], body[25:]])
    assert status == 200, answer
    assert answer["user"]["email"] == user.email


@pytest.mark.django_db(transaction=True)
def test_a_chunked_body_over_the_limit_is_refused_with_413(settings):
    settings.SPARKOPS_MAX_REQUEST_BODY_BYTES = 1000
    status, answer = call(LOGIN, [b'{"email": "' + b"a" * 600, b"a" * 600 + b'"}'])
    assert status == 413
    assert answer["code"] == "request_too_large"
    assert "1000 bytes" in answer["message"]


@pytest.mark.django_db(transaction=True)
def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(settings):
    settings.SPARKOPS_MAX_REQUEST_BODY_BYTES = 1000
    headers = [(b"content-type", b"application/json"), (b"content-length", b"5000")]
    status, answer = call(LOGIN, [], headers)  # no body message is ever received
    assert status == 413
    assert answer["message"] == "Request body is 5000 bytes; the limit is 1000 bytes."


# ------------------------------------------------------------------------------
# A real uvicorn process (PostgreSQL: it must see the test database's committed rows)
# ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def uvicorn_server(transactional_db, settings):
    if connection.vendor != "postgresql":
        pytest.skip("the server process needs the PostgreSQL test database")
    db = connection.settings_dict
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "sparkops.settings.test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "SPARKOPS_MAX_REQUEST_BODY_BYTES": "1000",
    }
    command = [sys.executable, "-m", "uvicorn", "sparkops.asgi:application", "--port", str(port), "--lifespan", "off"]
    process = subprocess.Popen(  # noqa: S603 - our own server, fixed arguments
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        _wait_for(port)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_for(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("uvicorn did not start")


def post_chunked(port: int, chunks: list[bytes]) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", LOGIN, body=iter(chunks), headers={"Content-Type": "application/json"}, encode_chunked=True)
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_uvicorn_reads_a_chunked_body_and_caps_one_over_the_limit(uvicorn_server):
    user = UserFactory()
    body = login_body(user.email)
    status, answer = post_chunked(uvicorn_server, [body[:20], body[20:]])
    assert status == 200, answer
    assert answer["user"]["email"] == user.email

    status, answer = post_chunked(uvicorn_server, [b'{"email": "' + b"a" * 800 for _ in range(3)])
    assert status == 413, answer
    assert answer["code"] == "request_too_large"
