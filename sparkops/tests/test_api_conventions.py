import re

import pytest
from django.test import RequestFactory

from sparkops.api.exceptions import handler500
from sparkops.roles import Role
from sparkops.testing import client_for

ERROR_KEYS = {"status", "code", "message", "errors"}


def test_it_answers_an_unknown_api_path_with_the_error_shape(api_client):
    response = api_client.get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert set(response.json()) == ERROR_KEYS
    assert response.json()["status"] == 404


def test_it_answers_unauthenticated_calls_with_401_in_the_error_shape(api_client):
    response = api_client.get("/api/v1/projects")
    assert response.status_code == 401
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert body["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db
def test_it_gives_field_level_messages_for_bad_input(team):
    response = team.client("owner").post("/api/v1/projects", {"name": "", "slug": "not a slug!"}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert body["code"] == "invalid"
    assert set(body["errors"]) == {"name", "slug"}
    assert "name" in body["message"]


@pytest.mark.django_db
def test_it_refuses_malformed_json_with_the_error_shape(team):
    response = team.client("owner").generic("POST", "/api/v1/projects", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert set(response.json()) == ERROR_KEYS


@pytest.mark.django_db
def test_it_refuses_request_bodies_over_the_limit(team, settings):
    settings.SPARKOPS_MAX_REQUEST_BODY_BYTES = 1000
    response = team.client("owner").post("/api/v1/projects", {"name": "x" * 2000}, format="json")
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"
    assert not team.project.__class__.objects.filter(name="x" * 2000).exists()


@pytest.mark.django_db
def test_it_accepts_request_bodies_under_the_limit(team, settings):
    settings.SPARKOPS_MAX_REQUEST_BODY_BYTES = 1000
    response = team.client("owner").post("/api/v1/projects", {"name": "small"}, format="json")
    assert response.status_code == 201


def test_server_errors_carry_no_traceback():
    request = RequestFactory().get("/api/v1/projects")
    response = handler500(request)
    assert response.status_code == 500
    assert (
        response.content
        == b'{"status": 500, "code": "server_error", "message": "Internal server error.", "errors": {}}'
    )


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/v1/projects", "/api/v1/projects/", "/api/v1/auth/me", "/api/v1/auth/me/"])
def test_paths_work_with_and_without_a_trailing_slash(team, path):
    assert team.client("viewer").get(path).status_code == 200


@pytest.mark.django_db
def test_page_size_is_capped(team, settings):
    response = team.client("viewer").get("/api/v1/memberships", {"page_size": 100000})
    assert response.status_code == 200
    assert response.json()["count"] == 4


def test_cors_allows_the_configured_frontend_with_credentials(api_client):
    response = api_client.options(
        "/api/v1/auth/login", HTTP_ORIGIN="http://localhost:3000", HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST"
    )
    assert response["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert response["Access-Control-Allow-Credentials"] == "true"


def test_cors_preflight_allows_the_headers_the_api_reads(api_client):
    response = api_client.options(
        "/api/v1/runs",
        HTTP_ORIGIN="http://localhost:3000",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type, idempotency-key, x-api-key",
    )
    assert response.status_code == 200
    allowed = {name.strip() for name in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key", "x-api-key"} <= allowed


@pytest.mark.django_db
def test_cors_exposes_retry_after_to_the_frontend(api_client):
    response = api_client.get("/api/v1/runs", HTTP_ORIGIN="http://localhost:3000")
    assert response["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "retry-after" in response["Access-Control-Expose-Headers"].lower()


def test_cors_ignores_other_origins(api_client):
    response = api_client.options(
        "/api/v1/auth/login", HTTP_ORIGIN="http://evil.example", HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST"
    )
    assert "Access-Control-Allow-Origin" not in response


@pytest.mark.django_db
def test_the_browsable_api_uses_session_login(team):
    owner = team.members["owner"]
    client = client_for()
    client.force_login(owner)
    assert client.get("/api/v1/projects", HTTP_ACCEPT="text/html").status_code == 200


@pytest.mark.django_db
def test_options_describes_every_route_without_a_server_error(team):
    """OPTIONS (DRF's metadata) builds each view's serializer: a viewset action with none set
    answered 500. Every route of the schema, detail routes with an id of the caller's project."""
    client = team.client(Role.OWNER)
    client.raise_request_exception = False  # collect every failure, not the first
    paths = client.get("/openapi.json").json()["paths"]
    some_id = str(team.project.pk)
    failures = []
    for path in paths:
        url = re.sub(r"\{[^}]+\}", some_id, path)
        response = client.options(url)
        if response.status_code >= 500:
            failures.append((url, response.status_code))
    assert failures == []
    assert client.options(f"/api/v1/workflows/{some_id}/run/").status_code in (200, 404)
