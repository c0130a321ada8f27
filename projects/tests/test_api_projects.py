"""/api/v1/projects: scoping to the caller's projects, the role matrix and the error shape."""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.tests.factories import ApiKeyFactory, UserFactory
from projects.models import Membership, Project
from projects.tests.factories import MembershipFactory, ProjectFactory
from sparkops.roles import Role
from sparkops.testing import ROLES, client_for

LIST_URL = "/api/v1/projects"
ERROR_KEYS = {"status", "code", "message", "errors"}


def detail_url(project_or_pk, *, slash: bool = False) -> str:
    pk = getattr(project_or_pk, "pk", project_or_pk)
    return f"{LIST_URL}/{pk}" + ("/" if slash else "")


def assert_error(response, status: int) -> dict:
    """The one error shape: every 4xx answers {status, code, message, errors}."""
    body = response.json()
    assert response.status_code == status, body
    assert set(body) == ERROR_KEYS
    assert body["status"] == status
    assert isinstance(body["code"], str)
    assert body["code"]
    assert body["message"]
    assert isinstance(body["errors"], dict)
    return body


def result_ids(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return [row["id"] for row in response.json()["results"]]


# ------------------------------------------------------------------------------
# List
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_list_shows_members_only_the_team_project(team, role):
    ProjectFactory()  # a project nobody in the team belongs to
    response = team.client(role).get(LIST_URL)
    assert result_ids(response) == [str(team.project.pk)]
    assert response.json()["results"][0]["my_role"] == role


def test_list_never_shows_the_team_project_to_an_outsider(team):
    response = team.client("outsider").get(LIST_URL)
    assert result_ids(response) == [str(team.other_project.pk)]


def test_list_shows_every_project_the_caller_is_in_with_their_role_in_each(db):
    user = UserFactory()
    alpha = MembershipFactory(user=user, project=ProjectFactory(name="Alpha"), role=Role.OWNER).project
    beta = MembershipFactory(user=user, project=ProjectFactory(name="Beta"), role=Role.VIEWER).project
    ProjectFactory(name="Gamma")
    rows = client_for(user).get(LIST_URL).json()["results"]
    assert [(row["id"], row["my_role"]) for row in rows] == [(str(alpha.pk), "owner"), (str(beta.pk), "viewer")]


def test_list_shows_an_api_key_only_its_own_project(team):
    owner = team.members[Role.OWNER]
    MembershipFactory(user=owner, role=Role.OWNER)  # the owner is in a second project too
    key = ApiKeyFactory(project=team.project, created_by=owner, role=Role.VIEWER)
    response = client_for(api_key=key.raw).get(LIST_URL)
    assert result_ids(response) == [str(team.project.pk)]
    assert response.json()["results"][0]["my_role"] == "viewer"  # the lower of key and creator


@pytest.mark.parametrize("url", [LIST_URL, LIST_URL + "/"])
def test_list_answers_with_and_without_a_trailing_slash(team, url):
    assert result_ids(team.client("viewer").get(url)) == [str(team.project.pk)]


@pytest.mark.parametrize("slash", [False, True])
def test_detail_answers_with_and_without_a_trailing_slash(team, slash):
    response = team.client("viewer").get(detail_url(team.project, slash=slash))
    assert response.status_code == 200
    assert response.json()["id"] == str(team.project.pk)


# ------------------------------------------------------------------------------
# Authentication
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "detail"),
    [("get", False), ("post", False), ("get", True), ("patch", True), ("put", True), ("delete", True)],
)
def test_it_refuses_unauthenticated_callers(team, api_client, method, detail):
    url = detail_url(team.project) if detail else LIST_URL
    response = getattr(api_client, method)(url, {"name": "Renamed"})
    body = assert_error(response, 401)
    assert body["code"] == "not_authenticated"
    team.project.refresh_from_db()
    assert team.project.name != "Renamed"
    assert Project.objects.count() == 2


def test_it_refuses_a_bad_bearer_token(team):
    client = client_for()
    client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    assert_error(client.get(LIST_URL), 401)


# ------------------------------------------------------------------------------
# Create
# ------------------------------------------------------------------------------
def test_create_makes_the_creator_owner_and_derives_the_slug(db):
    user = UserFactory()
    response = client_for(user).post(LIST_URL, {"name": "Support bots", "description": "Tier 1"})
    assert response.status_code == 201, response.json()
    body = response.json()
    project = Project.objects.get(pk=body["id"])
    assert (project.name, project.slug, project.description) == ("Support bots", "support-bots", "Tier 1")
    assert project.created_by == user
    assert list(project.memberships.values_list("user_id", "role")) == [(user.pk, Role.OWNER)]
    assert body["slug"] == "support-bots"
    assert body["my_role"] == "owner"
    assert body["created_by"] == user.pk


def test_create_makes_a_derived_slug_unique(db):
    ProjectFactory(slug="support-bots")
    client = client_for(UserFactory())
    first = client.post(LIST_URL, {"name": "Support bots"})
    second = client.post(LIST_URL, {"name": "Support Bots!"})
    assert (first.status_code, second.status_code) == (201, 201)
    assert [first.json()["slug"], second.json()["slug"]] == ["support-bots-2", "support-bots-3"]
    assert Project.objects.filter(slug__startswith="support-bots").count() == 3


def test_create_falls_back_to_a_generic_slug_when_the_name_has_no_slug_characters(db):
    response = client_for(UserFactory()).post(LIST_URL, {"name": "!!!"})
    assert response.status_code == 201, response.json()
    assert Project.objects.get(pk=response.json()["id"]).slug == "project"


def test_create_keeps_an_explicit_slug(db):
    response = client_for(UserFactory()).post(LIST_URL, {"name": "Support bots", "slug": "helpdesk"})
    assert response.status_code == 201, response.json()
    assert Project.objects.get(pk=response.json()["id"]).slug == "helpdesk"


def test_create_refuses_an_explicit_duplicate_slug(team):
    body = assert_error(team.client("outsider").post(LIST_URL, {"name": "Copy", "slug": team.project.slug}), 400)
    assert body["code"] == "invalid"
    assert body["errors"]["slug"] == ["A project with this slug already exists."]
    assert not Project.objects.filter(name="Copy").exists()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "Ok", "slug": "not a slug"}, "slug"),
    ],
)
def test_create_refuses_invalid_input_with_field_errors(db, payload, field):
    body = assert_error(client_for(UserFactory()).post(LIST_URL, payload), 400)
    assert list(body["errors"]) == [field]
    assert body["errors"][field]
    assert not Project.objects.exists()
    assert not Membership.objects.exists()


def test_create_accepts_the_archived_flag(db):
    response = client_for(UserFactory()).post(LIST_URL, {"name": "Old things", "archived": True})
    assert response.status_code == 201, response.json()
    assert Project.objects.get(pk=response.json()["id"]).archived is True


def test_create_ignores_read_only_fields(db):
    user, someone_else = UserFactory(), UserFactory()
    wanted_id = uuid.uuid4()
    response = client_for(user).post(LIST_URL, {"name": "Mine", "id": str(wanted_id), "created_by": someone_else.pk})
    assert response.status_code == 201, response.json()
    project = Project.objects.get(name="Mine")
    assert project.pk != wanted_id
    assert project.created_by == user


def test_an_api_key_cannot_create_projects(team):
    key = ApiKeyFactory(project=team.project, created_by=team.members[Role.OWNER], role=Role.OWNER)
    assert_error(client_for(api_key=key.raw).post(LIST_URL, {"name": "Key-made"}), 403)
    assert not Project.objects.filter(name="Key-made").exists()


# ------------------------------------------------------------------------------
# Retrieve, update, delete: the role matrix
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_every_member_can_read_the_project_and_sees_their_role(team, role):
    response = team.client(role).get(detail_url(team.project))
    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["slug"], body["name"]) == (str(team.project.pk), team.project.slug, team.project.name)
    assert body["my_role"] == role


@pytest.mark.parametrize(
    ("role", "status"), [(Role.OWNER, 200), (Role.ADMIN, 200), (Role.DEVELOPER, 403), (Role.VIEWER, 403)]
)
def test_patch_needs_the_admin_role(team, role, status):
    response = team.client(role).patch(detail_url(team.project), {"name": "Renamed", "description": "New"})
    team.project.refresh_from_db()
    if status == 200:
        assert response.status_code == 200, response.json()
        assert response.json()["name"] == "Renamed"
        assert (team.project.name, team.project.description) == ("Renamed", "New")
    else:
        assert "admin role" in assert_error(response, 403)["message"]
        assert team.project.name != "Renamed"


@pytest.mark.parametrize(
    ("role", "status"), [(Role.OWNER, 200), (Role.ADMIN, 200), (Role.DEVELOPER, 403), (Role.VIEWER, 403)]
)
def test_put_needs_the_admin_role(team, role, status):
    response = team.client(role).put(detail_url(team.project), {"name": "Replaced", "slug": "replaced"})
    team.project.refresh_from_db()
    assert response.status_code == status
    assert ((team.project.name, team.project.slug) == ("Replaced", "replaced")) is (status == 200)


@pytest.mark.parametrize("role", ROLES)
def test_delete_needs_the_owner_role(team, role):
    response = team.client(role).delete(detail_url(team.project))
    exists = Project.objects.filter(pk=team.project.pk).exists()
    if role == Role.OWNER:
        assert response.status_code == 204
        assert not exists
        assert not Membership.objects.filter(project_id=team.project.pk).exists()
    else:
        assert "owner role" in assert_error(response, 403)["message"]
        assert exists
        assert Membership.objects.filter(project=team.project).count() == 4


def test_patch_archives_the_project(team):
    response = team.client("admin").patch(detail_url(team.project), {"archived": True})
    assert response.status_code == 200, response.json()
    team.project.refresh_from_db()
    assert team.project.archived is True


def test_patch_refuses_a_slug_taken_by_another_project(team):
    original = team.project.slug
    body = assert_error(team.client("owner").patch(detail_url(team.project), {"slug": team.other_project.slug}), 400)
    assert "slug" in body["errors"]
    team.project.refresh_from_db()
    assert team.project.slug == original


def test_patch_keeps_the_projects_own_slug(team):
    response = team.client("owner").patch(detail_url(team.project), {"slug": team.project.slug, "name": "Same slug"})
    assert response.status_code == 200, response.json()
    team.project.refresh_from_db()
    assert team.project.name == "Same slug"


def test_patch_cannot_change_read_only_fields(team):
    creator = team.project.created_by
    response = team.client("owner").patch(detail_url(team.project), {"created_by": team.outsider.pk})
    assert response.status_code == 200
    team.project.refresh_from_db()
    assert team.project.created_by == creator


def test_an_api_key_acts_with_the_lower_of_its_role_and_its_creators(team):
    key = ApiKeyFactory(project=team.project, created_by=team.members[Role.OWNER], role=Role.DEVELOPER)
    assert_error(client_for(api_key=key.raw).patch(detail_url(team.project), {"name": "By key"}), 403)
    team.project.refresh_from_db()
    assert team.project.name != "By key"


# ------------------------------------------------------------------------------
# Cross-project isolation
# ------------------------------------------------------------------------------
DETAIL_CALLS = [
    ("get", None),
    ("patch", {"name": "Taken over"}),
    ("put", {"name": "Taken over", "slug": "taken-over"}),
    ("delete", None),
]
EXPECTED = {  # method -> (owner, viewer) status; the outsider always gets 404
    "get": (200, 200),
    "patch": (200, 403),
    "put": (200, 403),
    "delete": (204, 403),
}


@pytest.mark.parametrize(("method", "payload"), DETAIL_CALLS)
@pytest.mark.parametrize("who", ["owner", "viewer", "outsider"])
def test_only_members_reach_the_team_project(team, who, method, payload):
    client = team.client(who)
    response = getattr(client, method)(detail_url(team.project), payload)
    if who == "outsider":
        # Indistinguishable from a project that does not exist: nothing leaks.
        unknown = getattr(client, method)(detail_url(uuid.uuid4()), payload)
        assert assert_error(response, 404) == unknown.json()
        team.project.refresh_from_db()  # still there, unchanged
        assert team.project.name != "Taken over"
    else:
        assert response.status_code == EXPECTED[method][who == "viewer"]


@pytest.mark.parametrize("pk", [uuid.uuid4(), "not-a-uuid"])
def test_an_unknown_or_malformed_id_is_404(team, pk):
    assert_error(team.client("owner").get(detail_url(pk)), 404)


def test_an_unknown_path_answers_404_in_the_error_shape(team):
    assert assert_error(team.client("owner").get("/api/v1/no-such-thing"), 404)["code"] == "not_found"


def test_an_unsupported_method_answers_405_in_the_error_shape(team):
    assert assert_error(team.client("owner").delete(LIST_URL), 405)["code"] == "method_not_allowed"


# ------------------------------------------------------------------------------
# Query counts
# ------------------------------------------------------------------------------
def _list_queries(client) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(LIST_URL)
    assert response.status_code == 200
    return len(queries), response.json()["count"]


def test_listing_projects_takes_a_fixed_number_of_queries(db, django_assert_max_num_queries):
    user = UserFactory()
    client = client_for(user)
    MembershipFactory.create_batch(3, user=user, role=Role.OWNER)
    few, count = _list_queries(client)
    assert count == 3
    MembershipFactory.create_batch(27, user=user, role=Role.VIEWER)
    with django_assert_max_num_queries(6):
        response = client.get(LIST_URL)
    assert len(response.json()["results"]) == 30
    many, count = _list_queries(client)
    assert count == 30
    assert many == few
