"""The live stream (not a test): N clients hold GET /api/v1/sse open on ONE web process (uvicorn,
the process a gunicorn worker runs) while this script writes run events and notices; it reports
the streams opened, the process's memory per stream, and commit-to-client latency.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/sparkops_bench REDIS_URL=redis://127.0.0.1:6379/6 \
        .venv/bin/python bench/live.py --streams 500 --seconds 20 --rate 10

Latency is from the moment the writing transaction has committed (the write call returned) to
the moment a client read the message, on one clock (writers and clients are threads and tasks of
this process). Beside it, measured in the same run, the ceiling it cannot beat: the same commits
seen by a bare LISTEN on the database, with nothing in between.
"""

import argparse
import asyncio
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import uvloop
from _setup import demo_workflow, django_setup, percentile, serve

MESSAGE = re.compile(rb'data: \{"source":"(\w+)","id":(\d+)')


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


PORT = free_port()


def start_web() -> subprocess.Popen:
    env = {**os.environ, "DJANGO_DEBUG": "false"}
    command = [sys.executable, "-m", "uvicorn", "sparkops.asgi:application", "--port", str(PORT)]
    command += ["--lifespan", "off", "--log-level", "warning", "--timeout-graceful-shutdown", "2"]
    return serve(command, PORT, env)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.committed: dict[tuple[str, int], float] = {}  # (source, id) -> when its write returned
        self.received: dict[tuple[str, int], list[float]] = defaultdict(list)
        self.notified: list[float] = []  # a bare LISTEN's wake-ups, one per committed write
        self.opened = 0
        self.errors: list[str] = []

    async def stream(self, headers: dict, opened: asyncio.Event) -> None:
        """A lean SSE client on a bare socket: at 500 streams an HTTP library's parsing in this one
        process would be what the latency measures."""
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        writer.write(f"GET /api/v1/sse HTTP/1.1\r\nHost: 127.0.0.1\r\n{lines}\r\n".encode())
        await writer.drain()
        counted, pending = False, b""
        try:
            while chunk := await reader.read(65536):
                now = time.perf_counter()
                data = pending + chunk
                cut = data.rfind(b"\n\n") + 2 if b"\n\n" in data else 0  # whole frames only; the rest waits
                chunk, pending = data[:cut], data[cut:]
                if not counted and b"\nid: " in chunk:
                    counted = True
                    self.opened += 1
                    if self.opened == self.args.streams:
                        opened.set()
                for source, id_ in MESSAGE.findall(chunk):
                    self.received[(source.decode(), int(id_))].append(now)
        finally:
            writer.close()

    async def listen(self, stop: asyncio.Event) -> None:
        import psycopg

        from live.channel import CHANNEL
        from live.hub import _conninfo

        async with await psycopg.AsyncConnection.connect(_conninfo(), autocommit=True) as conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            while not stop.is_set():
                async for _ in conn.notifies(timeout=0.5):
                    self.notified.append(time.perf_counter())

    def write(self, project_id, run_id) -> None:
        """``rate`` writes a second, alternately a run event and a notice, each its own transaction."""
        from django.db import connection

        from notices.services import publish
        from runs.engine.transitions import emit

        interval, n = 1 / self.args.rate, 0
        deadline = time.perf_counter() + self.args.seconds
        while time.perf_counter() < deadline:
            n += 1
            if n % 2:
                row, source = emit(run_id, "llm.call", payload={"n": n}), "run"
            else:
                row, source = publish(project_id, "budget.threshold", payload={"n": n}), "notice"
            self.committed[(source, row.pk)] = time.perf_counter()
            time.sleep(interval)
        connection.close()


async def run(bench: Bench, token: str, project_id, run_id, web_pid: int) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    before = rss_mb(web_pid)
    stop, opened = asyncio.Event(), asyncio.Event()
    streams = [asyncio.create_task(bench.stream(headers, opened)) for _ in range(bench.args.streams)]
    started = time.perf_counter()
    await asyncio.wait_for(opened.wait(), 120)
    open_seconds = time.perf_counter() - started
    await asyncio.sleep(1)
    during = rss_mb(web_pid)
    listener = asyncio.create_task(bench.listen(stop))
    await asyncio.sleep(0.5)
    cpu = cpu_seconds(web_pid)
    await asyncio.to_thread(bench.write, project_id, run_id)
    await asyncio.sleep(2)  # the last messages on their way
    cpu = cpu_seconds(web_pid) - cpu
    stop.set()
    await listener
    for task in streams:
        task.cancel()
    await asyncio.gather(*streams, return_exceptions=True)
    return {"before": before, "during": during, "open_seconds": open_seconds, "cpu": cpu}


def report(bench: Bench, memory: dict) -> None:
    args = bench.args
    latencies = [(t - bench.committed[key]) * 1000 for key, times in bench.received.items() for t in times]
    floor = [(t - c) * 1000 for t, c in zip(bench.notified, sorted(bench.committed.values()), strict=False)]
    expected = len(bench.committed) * args.streams
    got = sum(len(bench.received[key]) for key in bench.committed)
    per_stream = (memory["during"] - memory["before"]) * 1024 / args.streams
    print(f"{bench.opened}/{args.streams} streams open on one web process in {memory['open_seconds']:.1f}s")
    before, during = memory["before"], memory["during"]
    print(f"  memory: {before:.0f} MB before, {during:.0f} MB with them: {per_stream:.0f} kB per stream")
    writes = f"{len(bench.committed)} writes at {args.rate:g}/s for {args.seconds:.0f}s"
    print(f"  {writes}: {got}/{expected} messages delivered")
    print(
        f"  web process CPU while writing: {memory['cpu']:.1f} s,"
        f" {memory['cpu'] * 1e6 / max(got, 1):.0f} us per message delivered to one stream"
    )
    print(
        f"  commit to client: p50 {percentile(latencies, 50):.1f} ms, p95 {percentile(latencies, 95):.1f} ms"
        f"   (target p95 < 100 ms; ceiling, a bare LISTEN: p50 {percentile(floor, 50):.1f} ms,"
        f" p95 {percentile(floor, 95):.1f} ms)"
    )
    if bench.errors:
        print(f"  errors: {len(bench.errors)} ({', '.join(sorted(set(bench.errors)))})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=10, help="writes per second")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        raise SystemExit("set DATABASE_URL to PostgreSQL (and REDIS_URL)")
    django_setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from accounts.tokens import tokens_for_user
    from runs.models import Run

    user, project, workflow = demo_workflow(1)
    run_ = Run.objects.create(
        project=project, workflow=workflow, workflow_version=workflow.versions.order_by("-number").first()
    )
    token = tokens_for_user(user)["access"]
    web = start_web()
    bench = Bench(args)
    try:
        # uvloop, as in the web server: the 500 sockets of this process's clients are not what we measure
        memory = uvloop.run(run(bench, token, project.pk, run_.pk, web.pid))
    finally:
        web.terminate()
        web.wait(30)
    report(bench, memory)


if __name__ == "__main__":
    main()
