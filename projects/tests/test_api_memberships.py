"""/api/v1/memberships: who may add, change and remove members, and the last-owner rule."""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.tests.factories import ApiKeyFactory, UserFactory
from projects.models import Membership
from projects.services import LAST_OWNER, OWNER_ONLY
from projects.tests.factories import MembershipFactory, ProjectFactory
from sparkops.roles import Role
from sparkops.testing import ROLES, client_for

LIST_URL = "/api/v1/memberships"
ERROR_KEYS = {"status", "code", "message", "errors"}
ALLOWED_TO_MANAGE = [(Role.OWNER, True), (Role.ADMIN, True), (Role.DEVELOPER, False), (Role.VIEWER, False)]


def detail_url(membership_or_pk, *, slash: bool = False) -> str:
    pk = getattr(membership_or_pk, "pk", membership_or_pk)
    return f"{LIST_URL}/{pk}" + ("/" if slash else "")


def membership_of(team, role: str) -> Membership:
    return Membership.objects.get(project=team.project, user=team.members[role])


def role_of(membership: Membership) -> str | None:
    row = Membership.objects.filter(pk=membership.pk).values_list("role", flat=True).first()
    return row


def assert_error(response, status: int) -> dict:
    """The one error shape: every 4xx answers {status, code, message, errors}."""
    body = response.json()
    assert response.status_code == status, body
    assert set(body) == ERROR_KEYS
    assert body["status"] == status
    assert body["code"]
    assert body["message"]
    assert isinstance(body["errors"], dict)
    return body


def add(client, project, email: str, role: str = Role.DEVELOPER):
    return client.post(LIST_URL, {"project": str(project.pk), "email": email, "role": role})


@pytest.fixture
def newcomer(db):
    return UserFactory(email="newcomer@example.com", name="New Comer")


@pytest.fixture
def extra_viewer(team):
    """A viewer none of the team's clients acts as, to be changed or removed by others."""
    return MembershipFactory(project=team.project, role=Role.VIEWER)


@pytest.fixture
def second_owner(team):
    return MembershipFactory(project=team.project, role=Role.OWNER)


# ------------------------------------------------------------------------------
# List and retrieve
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_list_for_a_project_shows_its_members_to_every_member(team, role):
    MembershipFactory(project=team.other_project)
    response = team.client(role).get(LIST_URL, {"project": str(team.project.pk)})
    assert response.status_code == 200, response.json()
    rows = response.json()["results"]
    expected = {(user.email, user.name, str(r), user.pk) for r, user in team.members.items()}
    assert {(row["email"], row["name"], row["role"], row["user"]) for row in rows} == expected
    assert {row["project"] for row in rows} == {str(team.project.pk)}


@pytest.mark.parametrize("slash", [False, True])
def test_list_answers_with_and_without_a_trailing_slash(team, slash):
    response = team.client("viewer").get(LIST_URL + ("/" if slash else ""), {"project": str(team.project.pk)})
    assert response.json()["count"] == 4


def test_list_without_a_project_shows_only_the_callers_projects(team):
    MembershipFactory()  # some other project's member
    response = team.client("outsider").get(LIST_URL)
    assert response.status_code == 200
    rows = response.json()["results"]
    assert [(row["project"], row["email"]) for row in rows] == [(str(team.other_project.pk), team.outsider.email)]


@pytest.mark.parametrize("project", ["team", "unknown", "not-a-uuid"])
def test_list_for_a_project_the_caller_is_not_in_is_404(team, project):
    project_id = {"team": str(team.project.pk), "unknown": str(uuid.uuid4()), "not-a-uuid": "not-a-uuid"}[project]
    body = assert_error(team.client("outsider").get(LIST_URL, {"project": project_id}), 404)
    assert body["message"] == "No such project."


@pytest.mark.parametrize("slash", [False, True])
def test_a_member_can_read_a_membership(team, slash):
    developer = membership_of(team, Role.DEVELOPER)
    response = team.client("viewer").get(detail_url(developer, slash=slash))
    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["email"], body["role"]) == (developer.pk, developer.user.email, "developer")


def test_it_refuses_unauthenticated_callers(team, api_client, newcomer):
    assert_error(api_client.get(LIST_URL), 401)
    assert_error(add(api_client, team.project, newcomer.email), 401)
    assert_error(api_client.delete(detail_url(membership_of(team, Role.VIEWER))), 401)
    assert Membership.objects.filter(project=team.project).count() == 4


# ------------------------------------------------------------------------------
# Add by email
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(("role", "allowed"), ALLOWED_TO_MANAGE)
def test_adding_a_member_needs_the_admin_role(team, newcomer, role, allowed):
    response = add(team.client(role), team.project, newcomer.email, Role.DEVELOPER)
    added = Membership.objects.filter(project=team.project, user=newcomer)
    if allowed:
        assert response.status_code == 201, response.json()
        assert list(added.values_list("role", flat=True)) == ["developer"]
        body = response.json()
        assert (body["email"], body["name"], body["role"], body["user"]) == (
            "newcomer@example.com",
            "New Comer",
            "developer",
            newcomer.pk,
        )
    else:
        assert_error(response, 403)
        assert not added.exists()


def test_adding_matches_the_email_case_insensitively(team, newcomer):
    response = add(team.client("admin"), team.project, "NewComer@Example.COM")
    assert response.status_code == 201, response.json()
    assert Membership.objects.filter(project=team.project, user=newcomer).exists()


def test_adding_refuses_an_unknown_email(team):
    body = assert_error(add(team.client("owner"), team.project, "nobody@example.com"), 400)
    assert "register" in body["errors"]["email"][0]
    assert Membership.objects.filter(project=team.project).count() == 4


def test_adding_refuses_an_inactive_user(team):
    gone = UserFactory(is_active=False)
    assert "email" in assert_error(add(team.client("owner"), team.project, gone.email), 400)["errors"]
    assert not Membership.objects.filter(user=gone).exists()


def test_adding_refuses_someone_already_a_member(team):
    developer = membership_of(team, Role.DEVELOPER)
    body = assert_error(add(team.client("owner"), team.project, developer.user.email, Role.ADMIN), 400)
    assert body["errors"] == {"email": ["This user is already a member of the project."]}
    assert role_of(developer) == Role.DEVELOPER


def test_an_admin_cannot_grant_the_owner_role(team, newcomer):
    assert_error(add(team.client("admin"), team.project, newcomer.email, Role.OWNER), 403)
    assert not Membership.objects.filter(user=newcomer).exists()


def test_an_owner_can_grant_the_owner_role(team, newcomer):
    response = add(team.client("owner"), team.project, newcomer.email, Role.OWNER)
    assert response.status_code == 201, response.json()
    assert Membership.objects.get(project=team.project, user=newcomer).role == Role.OWNER


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({"email": "newcomer@example.com", "role": "superuser"}, {"role"}),
        ({"email": "not-an-email", "role": "viewer"}, {"email"}),
        ({}, {"email", "role"}),
    ],
)
def test_adding_refuses_invalid_input_with_field_errors(team, newcomer, payload, fields):
    body = assert_error(team.client("owner").post(LIST_URL, {"project": str(team.project.pk), **payload}), 400)
    assert set(body["errors"]) == fields
    assert Membership.objects.filter(project=team.project).count() == 4


def test_adding_needs_a_project(team, newcomer):
    body = assert_error(team.client("owner").post(LIST_URL, {"email": newcomer.email, "role": "viewer"}), 400)
    assert set(body["errors"]) == {"project"}
    assert not Membership.objects.filter(user=newcomer).exists()


def test_an_outsider_cannot_add_to_the_team_project(team, newcomer):
    response = add(team.client("outsider"), team.project, newcomer.email)
    unknown_id = uuid.uuid4()
    unknown = team.client("outsider").post(
        LIST_URL, {"project": str(unknown_id), "email": newcomer.email, "role": "developer"}
    )
    # The same answer as for a project that does not exist: its existence does not leak.
    body = assert_error(response, 400)
    assert body["errors"]["project"][0] == unknown.json()["errors"]["project"][0].replace(
        str(unknown_id), str(team.project.pk)
    )
    assert not Membership.objects.filter(user=newcomer).exists()


# ------------------------------------------------------------------------------
# Change role
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(("role", "allowed"), ALLOWED_TO_MANAGE)
@pytest.mark.parametrize("method", ["patch", "put"])
def test_changing_a_role_needs_the_admin_role(team, extra_viewer, role, allowed, method):
    response = getattr(team.client(role), method)(detail_url(extra_viewer), {"role": "developer"})
    if allowed:
        assert response.status_code == 200, response.json()
        body = response.json()
        assert (body["id"], body["role"], body["email"]) == (extra_viewer.pk, "developer", extra_viewer.user.email)
        assert role_of(extra_viewer) == Role.DEVELOPER
    else:
        assert_error(response, 403)
        assert role_of(extra_viewer) == Role.VIEWER


def test_changing_a_role_changes_only_the_role(team, extra_viewer):
    payload = {"role": "admin", "project": str(team.other_project.pk), "user": team.outsider.pk}
    assert team.client("owner").patch(detail_url(extra_viewer), payload).status_code == 200
    extra_viewer.refresh_from_db()
    assert (extra_viewer.role, extra_viewer.project, extra_viewer.user_id) == (
        Role.ADMIN,
        team.project,
        extra_viewer.user_id,
    )


def test_changing_a_role_refuses_an_invalid_role(team, extra_viewer):
    body = assert_error(team.client("owner").patch(detail_url(extra_viewer), {"role": "god"}), 400)
    assert list(body["errors"]) == ["role"]
    assert role_of(extra_viewer) == Role.VIEWER


def test_an_admin_cannot_promote_to_owner(team, extra_viewer):
    assert_error(team.client("admin").patch(detail_url(extra_viewer), {"role": "owner"}), 403)
    assert role_of(extra_viewer) == Role.VIEWER


def test_an_admin_cannot_change_an_owner(team, second_owner):
    assert_error(team.client("admin").patch(detail_url(second_owner), {"role": "viewer"}), 403)
    assert role_of(second_owner) == Role.OWNER


def test_an_owner_can_promote_and_demote_owners(team, extra_viewer, second_owner):
    client = team.client("owner")
    assert client.patch(detail_url(extra_viewer), {"role": "owner"}).status_code == 200
    assert client.patch(detail_url(second_owner), {"role": "developer"}).status_code == 200
    assert (role_of(extra_viewer), role_of(second_owner)) == (Role.OWNER, Role.DEVELOPER)


def test_it_refuses_demoting_the_last_owner(team):
    owner = membership_of(team, Role.OWNER)
    body = assert_error(team.client("owner").patch(detail_url(owner), {"role": "admin"}), 400)
    assert body["errors"] == {"role": [LAST_OWNER]}
    assert role_of(owner) == Role.OWNER


def test_the_last_owner_can_step_down_once_another_owner_exists(team):
    owner, admin = membership_of(team, Role.OWNER), membership_of(team, Role.ADMIN)
    client = team.client("owner")
    assert client.patch(detail_url(admin), {"role": "owner"}).status_code == 200
    response = client.patch(detail_url(owner), {"role": "admin"})
    assert response.status_code == 200, response.json()
    assert (role_of(owner), role_of(admin)) == (Role.ADMIN, Role.OWNER)


# ------------------------------------------------------------------------------
# Remove and leave
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("role", [Role.ADMIN, Role.DEVELOPER, Role.VIEWER])
def test_a_member_can_leave_the_project(team, role):
    mine = membership_of(team, role)
    client = team.client(role)
    assert client.delete(detail_url(mine)).status_code == 204
    assert not Membership.objects.filter(pk=mine.pk).exists()
    assert_error(client.get(f"/api/v1/projects/{team.project.pk}"), 404)  # and no longer sees it


@pytest.mark.parametrize(("role", "allowed"), ALLOWED_TO_MANAGE)
def test_removing_someone_else_needs_the_admin_role(team, extra_viewer, role, allowed):
    response = team.client(role).delete(detail_url(extra_viewer))
    if allowed:
        assert response.status_code == 204
        assert not Membership.objects.filter(pk=extra_viewer.pk).exists()
    else:
        assert_error(response, 403)
        assert Membership.objects.filter(pk=extra_viewer.pk).exists()


def test_an_admin_cannot_remove_an_owner(team, second_owner):
    assert_error(team.client("admin").delete(detail_url(second_owner)), 403)
    assert Membership.objects.filter(pk=second_owner.pk).exists()


def test_an_owner_can_remove_another_owner(team, second_owner):
    assert team.client("owner").delete(detail_url(second_owner)).status_code == 204
    assert not Membership.objects.filter(pk=second_owner.pk).exists()


def test_it_refuses_removing_the_last_owner(team):
    owner = membership_of(team, Role.OWNER)
    body = assert_error(team.client("owner").delete(detail_url(owner)), 400)
    assert body["message"] == LAST_OWNER
    assert body["errors"] == {"non_field_errors": [LAST_OWNER]}
    assert Membership.objects.filter(pk=owner.pk).exists()


def test_an_owner_can_leave_once_another_owner_exists(team, second_owner):
    owner = membership_of(team, Role.OWNER)
    assert team.client("owner").delete(detail_url(owner)).status_code == 204
    assert list(Membership.objects.filter(project=team.project, role=Role.OWNER)) == [second_owner]


# ------------------------------------------------------------------------------
# Error messages of refusals
# ------------------------------------------------------------------------------
def test_a_service_refusal_keeps_its_message_and_code(team, newcomer):
    body = assert_error(add(team.client("admin"), team.project, newcomer.email, Role.OWNER), 403)
    assert (body["code"], body["message"]) == ("permission_denied", OWNER_ONLY)


def test_a_missing_membership_answers_code_not_found(team):
    assert assert_error(team.client("outsider").get(detail_url(_target(team))), 404)["code"] == "not_found"


# ------------------------------------------------------------------------------
# API keys read members but never change them
# ------------------------------------------------------------------------------
def test_an_api_key_can_list_but_not_manage_members(team, newcomer, extra_viewer):
    key = ApiKeyFactory(project=team.project, created_by=team.members[Role.OWNER], role=Role.OWNER)
    client = client_for(api_key=key.raw)
    assert client.get(LIST_URL, {"project": str(team.project.pk)}).json()["count"] == 5
    assert_error(add(client, team.project, newcomer.email), 403)
    assert_error(client.patch(detail_url(extra_viewer), {"role": "admin"}), 403)
    assert_error(client.delete(detail_url(extra_viewer)), 403)
    assert role_of(extra_viewer) == Role.VIEWER
    assert not Membership.objects.filter(user=newcomer).exists()


# ------------------------------------------------------------------------------
# Cross-project isolation: an owner, a member and an outsider on every endpoint
# ------------------------------------------------------------------------------
def _target(team) -> Membership:
    return membership_of(team, Role.DEVELOPER)


CALLS = {  # name -> (method, url(team), payload)
    "list": ("get", lambda team: f"{LIST_URL}?project={team.project.pk}", None),
    "retrieve": ("get", lambda team: detail_url(_target(team)), None),
    "patch": ("patch", lambda team: detail_url(_target(team)), {"role": "viewer"}),
    "put": ("put", lambda team: detail_url(_target(team)), {"role": "viewer"}),
    "delete": ("delete", lambda team: detail_url(_target(team)), None),
}
EXPECTED = {  # name -> (owner, viewer) status; the outsider always gets 404
    "list": (200, 200),
    "retrieve": (200, 200),
    "patch": (200, 403),
    "put": (200, 403),
    "delete": (204, 403),
}


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("who", ["owner", "viewer", "outsider"])
def test_only_members_reach_the_team_memberships(team, who, call):
    method, url, payload = CALLS[call]
    before = sorted(Membership.objects.values_list("pk", "role"))
    response = getattr(team.client(who), method)(url(team), payload)
    if who == "outsider":
        assert_error(response, 404)
        assert sorted(Membership.objects.values_list("pk", "role")) == before
    else:
        assert response.status_code == EXPECTED[call][who == "viewer"]


@pytest.mark.parametrize("pk", [999_999, "not-a-number"])
def test_an_unknown_or_malformed_membership_id_is_404(team, pk):
    assert_error(team.client("owner").get(detail_url(pk)), 404)


# ------------------------------------------------------------------------------
# Query counts
# ------------------------------------------------------------------------------
def _list_queries(client, project) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(LIST_URL, {"project": str(project.pk)})
    assert response.status_code == 200
    return len(queries), len(response.json()["results"])


def test_listing_members_takes_a_fixed_number_of_queries(db, django_assert_max_num_queries):
    owner = MembershipFactory(role=Role.OWNER)
    project, client = owner.project, client_for(owner.user)
    MembershipFactory.create_batch(2, project=project)
    few, count = _list_queries(client, project)
    assert count == 3
    MembershipFactory.create_batch(27, project=project, role=Role.DEVELOPER)
    with django_assert_max_num_queries(6):
        client.get(LIST_URL, {"project": str(project.pk)})
    many, count = _list_queries(client, project)
    assert count == 30
    assert many == few


def test_listing_members_does_not_show_other_projects_members(team):
    ProjectFactory()
    MembershipFactory.create_batch(3, project=team.other_project)
    response = team.client("owner").get(LIST_URL)
    assert {row["project"] for row in response.json()["results"]} == {str(team.project.pk)}


def test_patch_with_no_fields_changes_nothing_and_answers_the_membership(team, extra_viewer):
    response = team.client("admin").patch(detail_url(extra_viewer), {})
    assert response.status_code == 200, response.content
    assert response.json()["role"] == Role.VIEWER
    assert role_of(extra_viewer) == Role.VIEWER


def test_patch_with_no_fields_still_needs_the_admin_role(team, extra_viewer):
    assert_error(team.client("developer").patch(detail_url(extra_viewer), {}), 403)


def test_put_without_a_role_is_a_field_error(team, extra_viewer):
    body = assert_error(team.client("admin").put(detail_url(extra_viewer), {}), 400)
    assert set(body["errors"]) == {"role"}
    assert role_of(extra_viewer) == Role.VIEWER
