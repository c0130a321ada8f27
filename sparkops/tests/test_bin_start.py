"""bin/start's process manager: honcho with the Procfile's prefork worker stops cleanly on SIGTERM
and on Ctrl-C (SIGINT to honcho): the worker shuts down warmly, no process is left, none is killed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# bin/start's honcho line, with the worker only (web and beat stop on SIGTERM as any process does).
HONCHO = "import sys, honcho.manager as m; m.KILL_WAIT = 20; from honcho.command import main; main(sys.argv[1:])"


def _worker_line() -> str:
    line = next(line for line in (ROOT / "Procfile.dev").read_text().splitlines() if line.startswith("worker:"))
    return line


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_honcho_stops_the_prefork_worker_cleanly(tmp_path, signum):
    procfile = tmp_path / "Procfile"
    procfile.write_text(_worker_line() + "\n")
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
        "SPARKOPS_VAR_DIR": str(tmp_path / "var"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    log = tmp_path / "honcho.log"
    with log.open("w") as out:
        honcho = subprocess.Popen(  # noqa: S603 - our own interpreter and Procfile
            [sys.executable, "-c", HONCHO, "-f", str(procfile), "-d", str(ROOT), "start"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while "ready." not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "ready." in log.read_text(), log.read_text()[-3000:]

        honcho.send_signal(signum)
        honcho.wait(timeout=30)
    finally:
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGKILL)
    text = log.read_text()
    assert "Warm shutdown" in text
    assert "SIGKILL" not in text
    assert "exited with 'signal" not in text  # no pool child died under its parent
    assert _processes_with(f"SPARKOPS_VAR_DIR={tmp_path / 'var'}") == []


def _processes_with(variable: str) -> list[int]:
    """Processes (ours) whose environment holds ``variable``: what this test started."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and variable.encode() in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone, or not ours
            continue
    return found
