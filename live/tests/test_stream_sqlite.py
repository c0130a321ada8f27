"""The stream on the embedded default: no LISTEN, the web process polls the tables. Read through
Django's ASGI handler in this process (SQLite's test database lives in memory, so a server
process could not see it); PostgreSQL's path is tested against a real server."""

import asyncio
import json

import pytest
from django.conf import settings
from django.db import connection
from django.test import AsyncClient

from accounts.tokens import tokens_for_user
from notices.choices import NoticeType
from notices.services import publish
from runs.engine.transitions import emit
from runs.tests.factories import bare_run, make_catalog, make_workflow
from sparkops.roles import Role
from sparkops.testing import make_team

pytestmark = [
    pytest.mark.skipif(
        settings.DATABASE_URL.startswith("postgres"), reason="PostgreSQL's path is test_stream_e2e.py, with a server"
    ),
    pytest.mark.django_db(transaction=True),
]


async def _frames(response, until, timeout: float = 10.0) -> list[dict]:
    """Frames of the response (id, event, data, comment) until ``until(frames)`` holds."""
    frames, buffer = [], ""
    content = aiter(response.streaming_content)
    async with asyncio.timeout(timeout):
        while not until(frames):
            buffer += (await anext(content)).decode()
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                frames.append(_parse(block))
    await content.aclose()
    return frames


def _parse(block: str) -> dict:
    frame = {}
    for line in block.splitlines():
        name, _, value = line.partition(":")
        frame[name or "comment"] = value.strip()
    if "data" in frame:
        frame["data"] = json.loads(frame["data"])
    return frame


def _in_thread(fn, *args):
    """A write in a thread of its own, committed (as a worker's would be)."""

    def write():
        try:
            return fn(*args)
        finally:
            connection.close()

    return asyncio.get_running_loop().run_in_executor(None, write)


def _events(frames):
    return [f for f in frames if "event" in f]


def test_the_stream_polls_new_rows_and_resumes_without_gap_or_duplicate(settings):
    settings.SPARKOPS_SSE_POLL_SECONDS = 0.05
    team = make_team()
    make_catalog(team.project)
    run = bare_run(make_workflow(team.project))
    headers = {"Authorization": f"Bearer {tokens_for_user(team.members[Role.VIEWER])['access']}"}

    async def scenario():
        first = await AsyncClient().get("/api/v1/sse", headers=headers)
        assert first.status_code == 200, first.content
        assert first["Content-Type"] == "text/event-stream"
        opening = await _frames(first, lambda f: any("id" in x for x in f))
        await _in_thread(publish, team.project.pk, NoticeType.SCHEDULE_PAUSED)
        await _in_thread(emit, run.pk, "run.started")
        await _in_thread(publish, team.other_project.pk, NoticeType.SCHEDULE_PAUSED)
        got = await _frames(first, lambda f: len(_events(f)) >= 2)
        last = [f["id"] for f in opening + got if "id" in f][-1]
        await _in_thread(emit, run.pk, "run.succeeded")  # written while nobody listens
        resumed = await AsyncClient().get("/api/v1/sse", headers={**headers, "Last-Event-ID": last})
        later = await _frames(
            resumed, lambda f: len(_events(f)) >= 2 and any("id" in x and "event" not in x for x in f)
        )
        return _events(got), _events(later)

    got, later = asyncio.run(scenario())
    assert [(f["event"], f["data"]["source"]) for f in got] == [("schedule.paused", "notice"), ("run.started", "run")]
    assert {f["data"]["project"] for f in got} == {str(team.project.pk)}
    # The run's end is in both logs: its own event, then the notice the engine's event caused.
    assert [(f["event"], f["data"]["source"]) for f in later] == [("run.succeeded", "run"), ("run.succeeded", "notice")]
    assert later[0]["data"]["sequence"] == 2
    assert later[1]["data"]["run"] == str(run.pk)
    assert later[0]["data"]["run"] == str(run.pk)
