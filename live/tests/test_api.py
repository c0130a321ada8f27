"""The stream's and the token's API: who may open what, and clear answers to bad input. The
stream itself is read over HTTP in test_stream_e2e.py (PostgreSQL) and test_stream_sqlite.py."""

import uuid

import pytest
from django.core import signing

from accounts.tests.factories import ApiKeyFactory
from live.tokens import SALT, stream_token_read
from runs.tests.factories import bare_run, make_catalog, make_workflow
from sparkops.roles import Role
from sparkops.testing import client_for

pytestmark = pytest.mark.django_db


def test_any_member_gets_a_stream_token_for_their_projects_or_the_ones_named(team):
    response = team.client(Role.VIEWER).post("/api/v1/sse/token", {"projects": [str(team.project.pk)]})
    assert response.status_code == 201
    body = response.json()
    assert body["projects"] == [str(team.project.pk)]
    grant = stream_token_read(body["token"])
    assert grant.projects == {team.project.pk}
    assert grant.user_id == str(team.members[Role.VIEWER].pk)
    assert stream_token_read(team.client(Role.VIEWER).post("/api/v1/sse/token", {}).json()["token"]).projects is None


def test_a_token_cannot_name_a_project_the_caller_is_not_in(team):
    response = team.client("outsider").post("/api/v1/sse/token", {"projects": [str(team.project.pk)]})
    assert response.status_code == 400
    assert "projects" in response.json()["errors"]


def test_a_token_made_with_an_api_key_remembers_the_key(team):
    key = ApiKeyFactory(project=team.project, created_by=team.members[Role.OWNER], role=Role.VIEWER)
    token = client_for(api_key=key.raw).post("/api/v1/sse/token", {}).json()["token"]
    assert stream_token_read(token).api_key_id == str(key.pk)


def test_an_expired_or_foreign_token_does_not_open_the_stream(team, settings):
    settings.SPARKOPS_SSE_TOKEN_SECONDS = -1  # already expired when read
    token = team.client(Role.VIEWER).post("/api/v1/sse/token", {}).json()["token"]
    forged = signing.dumps({"u": str(team.members[Role.OWNER].pk), "p": None, "k": None}, salt="another.purpose")
    for raw in (token, forged):
        response = client_for().get(f"/api/v1/sse?token={raw}")
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_stream_token"


def test_a_token_for_a_revoked_key_or_an_inactive_user_is_refused(team):
    key = ApiKeyFactory(project=team.project, created_by=team.members[Role.OWNER], role=Role.VIEWER)
    token = client_for(api_key=key.raw).post("/api/v1/sse/token", {}).json()["token"]
    key.revoked_at = key.created_at
    key.save(update_fields=["revoked_at"])
    assert client_for().get(f"/api/v1/sse?token={token}").status_code == 401
    viewer = team.members[Role.VIEWER]
    token = team.client(Role.VIEWER).post("/api/v1/sse/token", {}).json()["token"]
    viewer.is_active = False
    viewer.save(update_fields=["is_active"])
    assert client_for().get(f"/api/v1/sse?token={token}").status_code == 401


def test_a_stream_token_is_for_streaming_only(team):
    token = team.client(Role.VIEWER).post("/api/v1/sse/token", {}).json()["token"]
    assert client_for().get(f"/api/v1/projects?token={token}").status_code == 401
    assert client_for().get("/api/v1/projects", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401
    assert signing.loads(token, salt=SALT)  # signed for this purpose only


def test_the_stream_needs_credentials(api_client):
    response = api_client.get("/api/v1/sse")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"


def test_another_projects_stream_or_run_answers_404(team):
    make_catalog(team.other_project)
    foreign_run = bare_run(make_workflow(team.other_project))
    client = team.client(Role.VIEWER)
    assert client.get(f"/api/v1/sse?project={team.other_project.pk}").status_code == 404
    assert client.get(f"/api/v1/sse?project={team.project.pk},{team.other_project.pk}").status_code == 404
    assert client.get(f"/api/v1/sse?run={foreign_run.pk}").status_code == 404
    assert client.get(f"/api/v1/sse?run={uuid.uuid4()}").status_code == 404


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("types=run.failed,nonsense", "types"),
        ("after=yesterday", "after"),
        ("timeout=0", "timeout"),
        ("project=not-a-uuid", "project"),
        ("source=everything", "source"),
    ],
)
def test_bad_filters_get_field_level_messages(team, query, field):
    response = team.client(Role.VIEWER).get(f"/api/v1/sse?{query}", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert field in response.json()["errors"]


def test_a_bad_last_event_id_is_refused_by_name(team):
    response = team.client(Role.VIEWER).get("/api/v1/sse", HTTP_LAST_EVENT_ID="12;drop")
    assert response.status_code == 400
    assert "Last-Event-ID" in response.json()["errors"]


def test_options_on_the_stream_describes_it(team):
    assert team.client(Role.VIEWER).options("/api/v1/sse").status_code == 200


def test_last_event_id_wins_over_after_as_a_reconnecting_browser_sends_both(team):
    """EventSource reconnects to the URL it opened (its first ?after=) with the newest id in the
    header: a bad header is refused even with a good ?after=, so the header is the one read."""
    response = team.client(Role.VIEWER).get("/api/v1/sse?after=1.1", HTTP_LAST_EVENT_ID="nonsense")
    assert response.status_code == 400
    assert "Last-Event-ID" in response.json()["errors"]
