"""Inputs at the edge of what the API accepts: each answers a 4xx in the error shape, never a 500."""

import json

import pytest
from django.db.models import ProtectedError
from django.http import HttpResponseNotAllowed, HttpResponseServerError
from django.test import RequestFactory
from rest_framework.exceptions import ValidationError

from projects.models import Project
from projects.tests.factories import MembershipFactory, ProjectFactory
from runs.models import Run
from runs.tests.factories import make_catalog, make_workflow, start
from sparkops.api.exceptions import exception_handler
from sparkops.api.middleware import ApiResponseMiddleware

ERROR_KEYS = {"status", "code", "message", "errors"}


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def assert_error(response, status: int) -> dict:
    body = response.json()
    assert response.status_code == status, body
    assert set(body) == ERROR_KEYS
    assert body["status"] == status
    return body


@pytest.mark.django_db
@pytest.mark.parametrize("depth", [65, 1000, 100_000])
def test_it_refuses_deeply_nested_json_before_login(api_client, depth):
    body = '{"email": "a@example.com", "password": ' + nested(depth) + "}"
    response = api_client.generic("POST", "/api/v1/auth/login", body, content_type="application/json")
    assert_error(response, 400)
    assert "64 levels" in response.json()["message"]


@pytest.mark.django_db
def test_it_refuses_deeply_nested_json_on_an_authenticated_endpoint(team):
    body = '{"name": "deep", "description": ' + nested(1000) + "}"
    response = team.client("owner").generic("POST", "/api/v1/projects", body, content_type="application/json")
    assert_error(response, 400)


@pytest.mark.django_db
def test_it_accepts_json_nested_to_the_limit(team):
    # 63 levels inside the top-level object: 64 in all.
    body = '{"name": "deep enough", "description": ' + nested(63) + "}"
    response = team.client("owner").generic("POST", "/api/v1/projects", body, content_type="application/json")
    # The description is a string field, so the list is a field error: what matters is it got parsed.
    body = assert_error(response, 400)
    assert set(body["errors"]) == {"description"}


@pytest.mark.django_db
def test_a_delete_refused_by_a_protecting_foreign_key_is_a_409_naming_what_refers_to_it(team):
    make_catalog(team.project)
    workflow = make_workflow(team.project)
    runs = {start(workflow), start(workflow)}
    with pytest.raises(ProtectedError) as caught:
        workflow.versions.get().delete()  # the runs pin it

    response = exception_handler(caught.value, {})

    assert response.status_code == 409
    assert response.data["code"] == "protected"
    assert response.data["message"] == "This cannot be deleted: 2 runs still refer to it."
    assert Run.objects.filter(pk__in=[run.pk for run in runs]).count() == 2


@pytest.mark.parametrize("path", ["/api/v1/no-such-thing", "/api/nothing/here/", "/api/v1/projects/not-a-uuid/x"])
def test_an_unknown_api_path_answers_the_json_error_shape_even_under_debug(api_client, settings, path):
    settings.DEBUG = True
    response = api_client.get(path)
    body = assert_error(response, 404)
    assert body["code"] == "not_found"
    assert response["Content-Type"] == "application/json"


def test_an_html_server_error_under_api_becomes_the_json_error_shape():
    # What Django's DEBUG page looks like when a view fails outside DRF.
    middleware = ApiResponseMiddleware(lambda request: HttpResponseServerError("<html>Traceback…</html>"))
    response = middleware(RequestFactory().get("/api/v1/projects"))
    assert response.status_code == 500
    assert json.loads(response.content) == {
        "status": 500,
        "code": "server_error",
        "message": "Internal server error.",
        "errors": {},
    }


def test_an_html_method_not_allowed_under_api_keeps_its_allow_header():
    middleware = ApiResponseMiddleware(lambda request: HttpResponseNotAllowed(["GET"]))
    response = middleware(RequestFactory().delete("/api/v1/metrics"))
    assert json.loads(response.content)["code"] == "method_not_allowed"
    assert response["Allow"] == "GET"


@pytest.mark.django_db
def test_authenticated_api_answers_are_never_cached(team):
    response = team.client("viewer").get("/api/v1/projects")
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]


@pytest.mark.django_db
def test_api_errors_are_never_cached(api_client):
    response = api_client.get("/api/v1/projects")
    assert response.status_code == 401
    assert "no-store" in response["Cache-Control"]


@pytest.fixture
def runs(team):
    make_catalog(team.project)
    workflow = make_workflow(team.project)
    return [start(workflow) for _ in range(3)]


def test_a_bad_after_on_run_events_is_a_field_error_listed_like_every_other(team, runs):
    response = team.client("viewer").get(f"/api/v1/runs/{runs[0].pk}/events", {"after": "abc"})
    assert assert_error(response, 400)["errors"] == {"after": ["A whole number."]}


def test_a_field_error_raised_as_a_bare_string_still_answers_a_list():
    response = exception_handler(ValidationError({"field": "Wrong.", "nested": {"inner": "Also."}}), {})
    assert response.data["errors"] == {"field": ["Wrong."], "nested": {"inner": ["Also."]}}


@pytest.mark.django_db
@pytest.mark.parametrize("page", ["abc", "0", "-1", "1.5"])
def test_a_page_that_is_not_a_number_is_a_field_error(team, page):
    body = assert_error(team.client("viewer").get("/api/v1/memberships", {"page": page}), 400)
    assert set(body["errors"]) == {"page"}


@pytest.mark.django_db
def test_a_page_past_the_last_is_not_found_and_last_is_the_last(team):
    client = team.client("viewer")
    assert_error(client.get("/api/v1/memberships", {"page": 99}), 404)
    assert client.get("/api/v1/memberships", {"page": "last", "page_size": 3}).json()["count"] == 4


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/v1/projects", "/api/v1/memberships", "/api/v1/runs", "/api/v1/workflows"])
def test_ordering_by_an_unknown_field_is_a_field_error_naming_the_allowed_ones(team, path):
    body = assert_error(team.client("viewer").get(path, {"ordering": "-password,name"}), 400)
    assert "-password" in body["errors"]["ordering"][0]
    assert "allowed:" in body["errors"]["ordering"][0]


def test_runs_can_be_listed_oldest_first(team, runs):
    response = team.client("viewer").get("/api/v1/runs", {"ordering": "queued_at"})
    assert response.status_code == 200, response.json()
    assert [row["id"] for row in response.json()["results"]] == [str(run.pk) for run in runs]
    newest_first = team.client("viewer").get("/api/v1/runs").json()["results"]
    assert [row["id"] for row in newest_first] == [str(run.pk) for run in reversed(runs)]


@pytest.mark.django_db
def test_equal_values_are_ordered_by_id_so_pages_never_overlap(team):
    user = team.members["viewer"]
    for _ in range(6):
        MembershipFactory(user=user, project=ProjectFactory(name="Same"))
    client = team.client("viewer")
    pages = [
        client.get("/api/v1/projects", {"ordering": "-name", "page_size": 2, "page": n}).json()["results"]
        for n in (1, 2, 3, 4)
    ]
    ids = [row["id"] for page in pages for row in page]
    assert len(ids) == len(set(ids)) == Project.objects.filter(memberships__user=user).count()
