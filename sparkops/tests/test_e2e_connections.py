"""End to end: PostgreSQL sessions stay bounded under load, on the web server as production runs
it (gunicorn with uvicorn workers, production settings) and in a real Celery worker. Skipped
unless DATABASE_URL and REDIS_URL are set (CI sets both).

``SPARKOPS_LOAD_SECONDS`` sets how long the 8 clients run (20 s by default; the README quotes a
minute-long run)."""

import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import httpx
import psycopg
import pytest
from django.conf import settings
from django.db import connection

from accounts.tokens import tokens_for_user
from runs.tests.e2e_support import ROOT, Worker, database_url
from sparkops.celery import app as celery_app
from sparkops.testing import make_team

pytestmark = [
    pytest.mark.skipif(
        not (settings.DATABASE_URL.startswith("postgres") and settings.REDIS_URL),
        reason="needs PostgreSQL and Redis (set DATABASE_URL and REDIS_URL)",
    ),
    pytest.mark.django_db(transaction=True),
]

CLIENTS = 8
WEB_WORKERS = 2
POOL_MAX = 10


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def backends(dsn: str, database: str) -> int:
    """Sessions on ``database`` other than the one asking."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
        return conn.execute(query, [database]).fetchone()[0]


def sessions_opened(dsn: str, database: str) -> int:
    """Sessions ever opened on ``database`` (PostgreSQL 14+ counts them)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", [database]).fetchone()[0]


def admin_dsn() -> str:
    db = connection.settings_dict
    return f"host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432} user={db['USER']} dbname=postgres"


class WebServer:
    """gunicorn with uvicorn workers, as the Dockerfile runs it, on the test database."""

    def __init__(self, log_path, env: dict | None = None) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "sparkops.settings.production",
            "DJANGO_SECRET_KEY": "load-test-" + "x" * 50,
            "JWT_SIGNING_KEY": settings.SIMPLE_JWT["SIGNING_KEY"],
            "SPARKOPS_ENCRYPTION_KEYS": "bGV0cy1wcmV0ZW5kLXRoaXMtaXMtMzItYnl0ZXMtbG9uZw==",
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "false",
            "SPARKOPS_ENV_FILE": os.devnull,
            "DATABASE_POOL_MAX_SIZE": str(POOL_MAX),
            **(env or {}),
        }

    def __enter__(self) -> "WebServer":
        command = [
            sys.executable, "-m", "gunicorn", "sparkops.asgi:application", "-k", "uvicorn_worker.UvicornWorker",
            "--bind", f"127.0.0.1:{self.port}", "--workers", str(WEB_WORKERS),
        ]  # fmt: skip
        log = self.log_path.open("a")
        self.process = subprocess.Popen(  # noqa: S603 - our own server, fixed arguments
            command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"web server did not start: {self.log_path.read_text()[-3000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        os.killpg(self.process.pid, 15)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()


def load(url: str, token: str, seconds: float, sample) -> tuple[Counter, int]:
    """CLIENTS threads calling the API for ``seconds``; the status codes and the peak of
    ``sample()`` taken every 0.2 s meanwhile."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line a request otherwise
    statuses: Counter = Counter()
    lock, stop = threading.Lock(), threading.Event()

    def client() -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            while not stop.is_set():
                for path in ("/api/v1/runs", "/api/v1/projects", "/health/ready"):
                    try:
                        code = http.get(path).status_code
                    except httpx.TransportError:
                        code = 0  # no answer at all
                    with lock:
                        statuses[code] += 1

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    peak, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, sample())
        time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join()
    return statuses, max(peak, sample())


def test_the_production_web_server_keeps_postgresql_sessions_bounded(tmp_path):
    team = make_team()
    token = tokens_for_user(team.members["developer"])["access"]
    database, dsn = connection.settings_dict["NAME"], admin_dsn()
    seconds = float(os.environ.get("SPARKOPS_LOAD_SECONDS", "20"))

    with WebServer(tmp_path / "web.log") as server:
        statuses, peak = load(server.url, token, seconds, lambda: backends(dsn, database))

    bound = WEB_WORKERS * POOL_MAX + 2  # the pools, and this test's own connection
    print(f"\n{sum(statuses.values())} requests in {seconds:g}s: {dict(statuses)}; peak sessions {peak}")
    assert set(statuses) == {200}, statuses
    assert peak <= bound, f"{peak} PostgreSQL sessions, more than {bound}"


def test_a_worker_reuses_its_connection_across_tasks(tmp_path):
    from runs import tasks

    celery_app.control.purge()
    database, dsn = connection.settings_dict["NAME"], admin_dsn()
    worker = Worker(tmp_path / "worker.log").start()
    try:
        opened_before = sessions_opened(dsn, database)
        count = 40
        for _ in range(count):
            tasks.run_advance.delay(str(uuid.uuid4()))  # a run that does not exist: one query, done
        deadline = time.monotonic() + 60
        while worker.log_path.read_text().count("runs.run_advance") < 2 * count:  # received, succeeded
            assert time.monotonic() < deadline, worker.log_path.read_text()[-3000:]
            time.sleep(0.2)
        opened = sessions_opened(dsn, database) - opened_before
    finally:
        worker.stop()

    print(f"\n{count} tasks opened {opened} PostgreSQL sessions")
    assert opened <= 6, f"{count} tasks opened {opened} sessions"  # two processes, a few checks aside
