"""The live stream end to end: uvicorn as shipped, on PostgreSQL with LISTEN/NOTIFY, read by a
real HTTP client. Skipped unless DATABASE_URL names PostgreSQL (CI sets it)."""

import threading
import time

import httpx
import pytest
from django.conf import settings
from django.db import connection, transaction

from accounts.tests.factories import ApiKeyFactory
from accounts.tokens import tokens_for_user
from notices.choices import NoticeType
from notices.services import publish
from runs.engine.transitions import emit
from runs.models import RunEvent
from runs.tests.factories import bare_run, echo_price, make_catalog, make_workflow, start
from sparkops.roles import Role
from sparkops.testing import make_team

from .support import Listener, WebServer

pytestmark = [
    pytest.mark.skipif(
        not settings.DATABASE_URL.startswith("postgres"), reason="the server process needs PostgreSQL (DATABASE_URL)"
    ),
    pytest.mark.django_db(transaction=True),
]
HEARTBEAT = 0.5
IDLE = 1.0
AT_REST = "the reader is at rest"


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory):
    env = {"SPARKOPS_SSE_HEARTBEAT_SECONDS": str(HEARTBEAT), "SPARKOPS_SSE_IDLE_SECONDS": str(IDLE)}
    web = WebServer(tmp_path_factory.mktemp("live") / "web.log", env)
    yield web
    web.stop()


def bearer(user) -> dict:
    return {"Authorization": f"Bearer {tokens_for_user(user)['access']}"}


def open_stream(server, query: str = "", headers: dict | None = None) -> Listener:
    listener = Listener(f"{server.origin}/api/v1/sse?{query}", headers or {})
    assert listener.status == 200
    listener.wait_for(lambda s: s.last_id, what="the opening id")
    return listener


def notice(project, n: int):
    return publish(project.pk, NoticeType.BUDGET_THRESHOLD, payload={"n": n})


def test_a_stream_resumes_after_a_disconnect_with_no_gap_and_no_duplicate_while_events_are_written(server):
    team = make_team()
    make_catalog(team.project)
    run = bare_run(make_workflow(team.project))
    headers = bearer(team.members[Role.VIEWER])
    written: list[tuple[str, int]] = []
    stop = threading.Event()

    def writer(kind: str) -> None:
        n = 0
        while not stop.is_set() and n < 150:
            n += 1
            if kind == "notices":
                written.append(("notice", notice(team.project, n).pk))
            else:
                written.append(("run", emit(run.pk, "llm.call", payload={"n": n}).pk))
            time.sleep(0.005)
        connection.close()

    threads = [threading.Thread(target=writer, args=[kind]) for kind in ("notices", "events")]
    received: list[tuple[str, int]] = []
    listener = open_stream(server, "", headers)  # from now: before the first write
    for thread in threads:
        thread.start()
    try:
        for _ in range(6):  # hang up and come back, several times, while both writers write
            time.sleep(0.15)
            listener.close()
            received += [(f.data["source"], f.data["id"]) for f in listener.events]
            listener = open_stream(server, "", {**headers, "Last-Event-ID": listener.last_id})
    finally:
        for thread in threads:
            thread.join()
    listener.wait_for(lambda s: len(received) + len(s.events) >= len(written), what="every event")
    time.sleep(0.3)
    listener.close()
    received += [(f.data["source"], f.data["id"]) for f in listener.events]
    assert len(received) == len(set(received)), "a message came twice"
    assert sorted(received) == sorted(written)


def test_a_row_that_commits_after_a_later_one_is_still_sent_on_resume(server):
    """Notice k is in flight while k+1 commits and is streamed; the client hangs up; k commits.
    Resuming from the last id sends k (and what came since), never k+1 again."""
    team = make_team()
    headers = bearer(team.members[Role.VIEWER])
    listener = open_stream(server, headers=headers)
    inserted, release = threading.Event(), threading.Event()
    slow = {}

    def slow_writer() -> None:
        with transaction.atomic():
            slow["notice"] = notice(team.project, 1)
            inserted.set()
            release.wait(10)
        connection.close()

    thread = threading.Thread(target=slow_writer)
    thread.start()
    inserted.wait(10)
    fast = notice(team.project, 2)
    listener.wait_for(lambda s: any(f.data["id"] == fast.pk for f in s.events), what="the later notice")
    listener.close()
    assert slow["notice"].pk < fast.pk
    release.set()
    thread.join()
    after = notice(team.project, 3)
    resumed = open_stream(server, headers={**headers, "Last-Event-ID": listener.last_id})
    resumed.wait_for(lambda s: len(s.events) >= 2, what="the late and the new notice")
    time.sleep(0.3)
    resumed.close()
    assert [f.data["id"] for f in resumed.events] == [slow["notice"].pk, after.pk]


def test_events_of_other_projects_never_arrive_and_types_filter(server):
    team = make_team()
    mine = open_stream(server, headers=bearer(team.members[Role.VIEWER]))
    failures = open_stream(server, "types=run.failed", headers=bearer(team.members[Role.VIEWER]))
    notice(team.other_project, 1)
    publish(team.other_project.pk, NoticeType.RUN_FAILED)
    ours = publish(team.project.pk, NoticeType.RUN_FAILED, payload={"why": "x"})
    notice(team.project, 2)
    mine.wait_for(lambda s: len(s.events) >= 2, what="our two notices")
    failures.wait_for(lambda s: len(s.events) >= 1, what="our failure")
    time.sleep(0.3)
    mine.close()
    failures.close()
    assert {f.data["project"] for f in mine.events} == {str(team.project.pk)}
    assert [f.event for f in mine.events] == ["run.failed", "budget.threshold"]
    assert [(f.event, f.data["id"], f.data["payload"]) for f in failures.events] == [
        ("run.failed", ours.pk, {"why": "x"})
    ]


def test_a_stream_token_an_api_key_and_a_jwt_each_open_the_stream_for_their_projects_only(server):
    team = make_team()
    viewer = team.members[Role.VIEWER]
    key = ApiKeyFactory(project=team.project, created_by=team.members[Role.OWNER], role=Role.VIEWER)
    outsider_key = ApiKeyFactory(project=team.other_project, created_by=team.outsider, role=Role.VIEWER)
    token = httpx.post(f"{server.origin}/api/v1/sse/token", json={}, headers=bearer(viewer)).json()["token"]
    streams = {
        "token": open_stream(server, f"token={token}"),
        "key": open_stream(server, headers={"Authorization": f"Api-Key {key.raw}"}),
        "jwt": open_stream(server, headers=bearer(viewer)),
        "outsider": open_stream(server, headers={"X-API-Key": outsider_key.raw}),
    }
    ours = notice(team.project, 1)
    for name in ("token", "key", "jwt"):
        streams[name].wait_for(lambda s: s.events, what=f"the notice on the {name} stream")
    time.sleep(0.3)
    for listener in streams.values():
        listener.close()
    for name in ("token", "key", "jwt"):
        assert [f.data["id"] for f in streams[name].events] == [ours.pk], name
    assert streams["outsider"].events == []
    refused = httpx.get(f"{server.origin}/api/v1/sse?token=not-a-token", timeout=5)
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_stream_token"
    assert httpx.get(f"{server.origin}/api/v1/projects?token={token}", timeout=5).status_code == 401


def test_an_idle_stream_sends_heartbeat_comments_and_ends_at_its_timeout(server):
    team = make_team()
    listener = open_stream(server, "timeout=2", headers=bearer(team.members[Role.VIEWER]))
    listener.wait_for(lambda s: sum(f.comment == "keep-alive" for f in s.frames) >= 2, what="two heartbeats")
    listener._thread.join(timeout=5)
    assert not listener._thread.is_alive(), "the stream should end at its timeout"


def test_a_runs_whole_log_arrives_in_order_with_its_step_status_tokens_and_cost(server, engine):
    team = make_team()
    make_catalog(team.project)
    echo_price()
    listener = open_stream(server, f"project={team.project.pk}&source=run", bearer(team.members[Role.VIEWER]))
    run = start(make_workflow(team.project))
    listener.wait_for(lambda s: any(f.event == "run.succeeded" for f in s.events), what="the run's end")
    listener.close()
    logged = list(RunEvent.objects.filter(run=run).order_by("sequence").values_list("sequence", "type"))
    assert [(f.data["sequence"], f.event) for f in listener.events] == logged
    calls = [f.data for f in listener.events if f.event == "llm.call"]
    assert [call["step"] for call in calls] == ["a", "b"]
    assert all(call["input_tokens"] > 0 and call["status"] == "succeeded" for call in calls)
    end = listener.events[-1].data
    assert (end["run"], end["status"], end["step"]) == (str(run.pk), "succeeded", None)
    run.refresh_from_db()
    assert end["input_tokens"] == run.input_tokens
    assert end["cost_usd"] == str(run.cost_usd)
    assert run.cost_usd > 0


def test_after_a_process_had_no_stream_a_new_one_starts_from_now_and_a_resumed_one_misses_nothing(server):
    team = make_team()
    headers = bearer(team.members[Role.VIEWER])
    first = open_stream(server, headers=headers)
    rests = server.log_path.read_text().count(AT_REST)
    first.close()
    deadline = time.monotonic() + IDLE + HEARTBEAT + 20
    while server.log_path.read_text().count(AT_REST) == rests:  # the reader goes to rest
        assert time.monotonic() < deadline, "the reader did not go to rest"
        time.sleep(0.1)
    missed = notice(team.project, 1)
    fresh = open_stream(server, headers=headers)
    resumed = open_stream(server, headers={**headers, "Last-Event-ID": first.last_id})
    new = notice(team.project, 2)
    fresh.wait_for(lambda s: s.events, what="the new notice")
    resumed.wait_for(lambda s: len(s.events) >= 2, what="the missed and the new notice")
    time.sleep(0.3)
    fresh.close()
    resumed.close()
    assert [f.data["id"] for f in fresh.events] == [new.pk]
    assert [f.data["id"] for f in resumed.events] == [missed.pk, new.pk]
