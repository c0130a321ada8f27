"""The API key endpoints, and what a key may do once it authenticates."""

import hashlib
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from accounts.models import ApiKey, User
from accounts.tests.factories import ApiKeyFactory, UserFactory, expired
from projects.models import Membership, Project
from projects.tests.factories import MembershipFactory, ProjectFactory
from sparkops.roles import Role
from sparkops.testing import client_for

KEYS = "/api/v1/api-keys"
PROJECTS = "/api/v1/projects"
MEMBERSHIPS = "/api/v1/memberships"
ME = "/api/v1/auth/me"

pytestmark = pytest.mark.django_db


def key_for(team, role: str = Role.DEVELOPER, *, creator: str | None = None, **fields) -> ApiKey:
    """A key created by the team member holding ``creator`` (by default the role of the key)."""
    return ApiKeyFactory(project=team.project, created_by=team.members[creator or role], role=role, **fields)


def secret_of(raw: str) -> str:
    # spk_<hex prefix>_<secret>; the secret itself may contain underscores.
    return raw.split("_", 2)[2]


def x_api_key_client(raw: str):
    client = client_for()
    client.credentials(HTTP_X_API_KEY=raw)
    return client


def listed_ids(response) -> set:
    assert response.status_code == 200, response.json()
    return {row["id"] for row in response.json()["results"]}


# ------------------------------------------------------------------------------
# Creating
# ------------------------------------------------------------------------------
def test_a_member_creates_a_key_whose_full_text_is_returned_once_and_stored_only_as_a_digest(team):
    developer = team.members["developer"]

    response = team.client("developer").post(
        KEYS, {"project": str(team.project.pk), "name": "nightly ETL", "role": "developer"}
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    raw = body["key"]
    key = ApiKey.objects.get()
    assert body["id"] == str(key.pk)
    assert (key.project, key.created_by, key.name, key.role) == (team.project, developer, "nightly ETL", "developer")
    assert raw.startswith(f"spk_{key.prefix}_")
    assert body["prefix"] == key.prefix
    assert key.digest == hashlib.sha256(raw.encode()).hexdigest()
    secret = secret_of(raw)
    for column, value in ApiKey.objects.filter(pk=key.pk).values().get().items():
        assert secret not in str(value), column
    detail = team.client("developer").get(f"{KEYS}/{key.pk}")
    listing = team.client("developer").get(KEYS)
    assert detail.status_code == listing.status_code == 200
    assert "key" not in detail.json()
    assert "key" not in listing.json()["results"][0]
    assert secret not in detail.content.decode() + listing.content.decode()


def test_a_key_gets_the_viewer_role_unless_another_is_asked_for(team):
    response = team.client("owner").post(KEYS, {"project": str(team.project.pk), "name": "ci"})

    assert response.status_code == 201, response.json()
    assert ApiKey.objects.get().role == Role.VIEWER


@pytest.mark.parametrize(
    ("creator", "role"),
    [("viewer", "developer"), ("developer", "admin"), ("admin", "owner"), ("viewer", "owner")],
)
def test_a_key_cannot_have_a_higher_role_than_its_creator(team, creator, role):
    response = team.client(creator).post(KEYS, {"project": str(team.project.pk), "name": "ci", "role": role})

    assert response.status_code == 400
    assert "role" in response.json()["errors"]
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize(
    ("creator", "role"), [("viewer", "viewer"), ("developer", "developer"), ("admin", "admin"), ("owner", "owner")]
)
def test_a_member_may_create_a_key_with_their_own_role(team, creator, role):
    response = team.client(creator).post(KEYS, {"project": str(team.project.pk), "name": "ci", "role": role})

    assert response.status_code == 201, response.json()
    assert ApiKey.objects.get().role == role


def test_an_outsider_cannot_create_a_key_for_a_project_they_are_not_in(team):
    response = team.client("outsider").post(KEYS, {"project": str(team.project.pk), "name": "ci"})

    assert response.status_code == 400
    assert "project" in response.json()["errors"]
    assert not ApiKey.objects.exists()


def test_a_key_cannot_expire_in_the_past(team):
    past = (timezone.now() - timedelta(minutes=1)).isoformat()

    response = team.client("owner").post(KEYS, {"project": str(team.project.pk), "name": "ci", "expires_at": past})

    assert response.status_code == 400
    assert "expires_at" in response.json()["errors"]
    assert not ApiKey.objects.exists()


def test_keys_need_a_logged_in_user(team):
    key_for(team)

    response = client_for().get(KEYS)

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


# ------------------------------------------------------------------------------
# Authenticating
# ------------------------------------------------------------------------------
def test_a_key_authenticates_in_the_authorization_header(team):
    key = key_for(team)

    response = client_for(api_key=key.raw).get(PROJECTS)

    assert listed_ids(response) == {str(team.project.pk)}
    assert response.json()["results"][0]["my_role"] == "developer"


def test_a_key_authenticates_in_the_x_api_key_header(team):
    key = key_for(team)

    response = x_api_key_client(key.raw).get(PROJECTS)

    assert listed_ids(response) == {str(team.project.pk)}


def test_a_key_acts_for_its_creator(team):
    key = key_for(team)

    response = client_for(api_key=key.raw).get(ME)

    assert response.status_code == 200
    assert response.json()["id"] == team.members["developer"].pk


def test_a_revoked_key_is_refused(team):
    key = key_for(team)

    revoked = team.client("developer").delete(f"{KEYS}/{key.pk}")

    assert revoked.status_code == 204
    key.refresh_from_db()
    assert key.revoked_at is not None  # kept, for the record, not deleted
    response = client_for(api_key=key.raw).get(PROJECTS)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_api_key"


def test_an_expired_key_is_refused(team):
    key = key_for(team, expires_at=expired())

    response = client_for(api_key=key.raw).get(PROJECTS)

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_api_key"


def test_a_key_stops_working_when_it_expires(team):
    key = key_for(team, expires_at=timezone.now() + timedelta(hours=1))
    assert client_for(api_key=key.raw).get(PROJECTS).status_code == 200

    with time_machine.travel(timezone.now() + timedelta(hours=1, seconds=1), tick=False):
        response = client_for(api_key=key.raw).get(PROJECTS)

    assert response.status_code == 401


@pytest.mark.parametrize(
    "mangle",
    [
        lambda raw: "garbage",
        lambda raw: "spk_",
        lambda raw: raw[:-1],  # right prefix, wrong secret
        lambda raw: raw + "x",
        lambda raw: raw.replace("spk_", "pk_", 1),
        lambda raw: "spk_000000000000_" + secret_of(raw),  # right secret, unknown prefix
    ],
    ids=["garbage", "tag-only", "short-secret", "long-secret", "wrong-tag", "unknown-prefix"],
)
def test_a_wrong_key_is_refused(team, mangle):
    key = key_for(team)

    response = client_for(api_key=mangle(key.raw)).get(PROJECTS)

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_api_key"
    key.refresh_from_db()
    assert key.last_used_at is None


def test_a_key_of_a_deactivated_creator_is_refused(team):
    key = key_for(team)
    User.objects.filter(pk=team.members["developer"].pk).update(is_active=False)

    assert client_for(api_key=key.raw).get(PROJECTS).status_code == 401


def test_using_a_key_records_when_it_was_last_used(team):
    key = key_for(team)
    assert key.last_used_at is None
    start = timezone.now()

    with time_machine.travel(start, tick=False):
        client_for(api_key=key.raw).get(PROJECTS)
    key.refresh_from_db()
    assert key.last_used_at == start

    # Written at most once a minute, not on every request.
    with time_machine.travel(start + timedelta(seconds=30), tick=False):
        client_for(api_key=key.raw).get(PROJECTS)
    key.refresh_from_db()
    assert key.last_used_at == start

    with time_machine.travel(start + timedelta(seconds=61), tick=False):
        client_for(api_key=key.raw).get(PROJECTS)
    key.refresh_from_db()
    assert key.last_used_at == start + timedelta(seconds=61)


# ------------------------------------------------------------------------------
# What a key may reach
# ------------------------------------------------------------------------------
def test_a_key_sees_only_its_own_project(team):
    developer = team.members["developer"]
    elsewhere = MembershipFactory(user=developer, role=Role.OWNER).project
    key = key_for(team)
    client = client_for(api_key=key.raw)

    assert listed_ids(client.get(PROJECTS)) == {str(team.project.pk)}
    assert client.get(f"{PROJECTS}/{elsewhere.pk}").status_code == 404
    assert client.get(MEMBERSHIPS, {"project": str(elsewhere.pk)}).status_code == 404
    members = client.get(MEMBERSHIPS).json()["results"]
    assert {m["project"] for m in members} == {str(team.project.pk)}
    # The same user, logged in, sees both.
    assert listed_ids(team.client("developer").get(PROJECTS)) == {str(team.project.pk), str(elsewhere.pk)}


def test_a_key_acts_with_its_own_role_when_lower_than_its_creators(team):
    key = key_for(team, Role.VIEWER, creator="owner")
    client = client_for(api_key=key.raw)

    response = client.patch(f"{PROJECTS}/{team.project.pk}", {"name": "Renamed"})

    assert response.status_code == 403
    assert client.get(f"{PROJECTS}/{team.project.pk}").json()["my_role"] == "viewer"
    team.project.refresh_from_db()
    assert team.project.name != "Renamed"


def test_demoting_the_creator_demotes_their_keys_at_once(team):
    key = key_for(team, Role.ADMIN)
    client = client_for(api_key=key.raw)
    assert client.patch(f"{PROJECTS}/{team.project.pk}", {"name": "As admin"}).status_code == 200
    team.project.refresh_from_db()
    assert team.project.name == "As admin"
    membership = Membership.objects.get(project=team.project, user=team.members["admin"])
    demoted = team.client("owner").patch(f"{MEMBERSHIPS}/{membership.pk}", {"role": "viewer"})
    assert demoted.status_code == 200, demoted.json()

    response = client.patch(f"{PROJECTS}/{team.project.pk}", {"name": "As viewer"})

    assert response.status_code == 403
    team.project.refresh_from_db()
    assert team.project.name == "As admin"
    assert client.get(f"{PROJECTS}/{team.project.pk}").json()["my_role"] == "viewer"


def test_removing_the_creator_from_the_project_leaves_their_key_seeing_nothing(team):
    key = key_for(team)
    Membership.objects.filter(project=team.project, user=team.members["developer"]).delete()
    client = client_for(api_key=key.raw)

    assert listed_ids(client.get(PROJECTS)) == set()
    assert client.get(f"{PROJECTS}/{team.project.pk}").status_code == 404
    assert listed_ids(client.get(MEMBERSHIPS)) == set()


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", KEYS), ("post", KEYS), ("get", "{keys}/{id}"), ("delete", "{keys}/{id}")],
    ids=["list", "create", "retrieve", "revoke"],
)
def test_a_key_can_never_manage_keys(team, method, path):
    key = key_for(team, Role.OWNER)
    target = key_for(team, Role.DEVELOPER)
    url = path.format(keys=KEYS, id=target.pk)

    response = getattr(client_for(api_key=key.raw), method)(url, {"project": str(team.project.pk), "name": "x"})

    assert response.status_code == 403
    assert set(ApiKey.objects.values_list("pk", flat=True)) == {key.pk, target.pk}
    assert not ApiKey.objects.filter(revoked_at__isnull=False).exists()


def test_a_key_can_read_memberships_but_never_change_them(team):
    key = key_for(team, Role.OWNER)
    client = client_for(api_key=key.raw)
    viewer = Membership.objects.get(project=team.project, user=team.members["viewer"])
    newcomer = UserFactory()
    before = set(Membership.objects.values_list("pk", "role"))

    listed = client.get(MEMBERSHIPS)
    added = client.post(MEMBERSHIPS, {"project": str(team.project.pk), "email": newcomer.email, "role": "viewer"})
    changed = client.patch(f"{MEMBERSHIPS}/{viewer.pk}", {"role": "admin"})
    removed = client.delete(f"{MEMBERSHIPS}/{viewer.pk}")

    assert listed.status_code == 200
    assert viewer.pk in {row["id"] for row in listed.json()["results"]}
    assert [added.status_code, changed.status_code, removed.status_code] == [403, 403, 403]
    assert set(Membership.objects.values_list("pk", "role")) == before


def test_a_key_cannot_change_its_creators_profile(team):
    key = key_for(team, Role.OWNER)
    owner = team.members["owner"]
    name = owner.name
    client = client_for(api_key=key.raw)

    renamed = client.patch(ME, {"name": "Mallory"})
    repassworded = client.patch(ME, {"current_password": "x", "new_password": "a-much-better-password-42"})

    assert renamed.status_code == repassworded.status_code == 403
    owner.refresh_from_db()
    assert owner.name == name
    assert owner.token_version == 0


def test_a_key_cannot_create_projects(team):
    key = key_for(team, Role.OWNER)
    before = Project.objects.count()

    response = client_for(api_key=key.raw).post(PROJECTS, {"name": "Shadow project"})

    assert response.status_code == 403
    assert Project.objects.count() == before


# ------------------------------------------------------------------------------
# Listing and revoking
# ------------------------------------------------------------------------------
def test_a_developer_lists_only_the_keys_they_created(team):
    own = key_for(team, Role.DEVELOPER)
    key_for(team, Role.ADMIN)
    key_for(team, Role.VIEWER)

    assert listed_ids(team.client("developer").get(KEYS)) == {str(own.pk)}


@pytest.mark.parametrize("role", ["admin", "owner"])
def test_an_admin_lists_every_key_of_their_project_and_no_other(team, role):
    keys = [key_for(team, r) for r in (Role.OWNER, Role.ADMIN, Role.DEVELOPER, Role.VIEWER)]
    ApiKeyFactory(project=team.other_project, created_by=team.outsider)

    assert listed_ids(team.client(role).get(KEYS)) == {str(k.pk) for k in keys}


def test_an_admin_still_sees_only_their_own_keys_in_projects_they_do_not_administer(team):
    admin = team.members["admin"]
    MembershipFactory(user=admin, project=team.other_project, role=Role.DEVELOPER)
    theirs = ApiKeyFactory(project=team.other_project, created_by=admin)
    ApiKeyFactory(project=team.other_project, created_by=team.outsider)

    assert listed_ids(team.client("admin").get(KEYS, {"project": str(team.other_project.pk)})) == {str(theirs.pk)}


def test_an_outsider_can_neither_see_nor_revoke_another_projects_key(team):
    key = key_for(team)
    outsider = team.client("outsider")

    assert outsider.get(f"{KEYS}/{key.pk}").status_code == 404
    assert outsider.delete(f"{KEYS}/{key.pk}").status_code == 404
    assert outsider.get(KEYS, {"project": str(team.project.pk)}).status_code == 404
    assert listed_ids(outsider.get(KEYS)) == set()
    key.refresh_from_db()
    assert key.revoked_at is None


def test_a_developer_cannot_revoke_a_colleagues_key(team):
    key = key_for(team, Role.VIEWER)

    response = team.client("developer").delete(f"{KEYS}/{key.pk}")

    assert response.status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None


@pytest.mark.parametrize("role", ["admin", "owner"])
def test_an_admin_revokes_a_members_key(team, role):
    key = key_for(team, Role.DEVELOPER)

    response = team.client(role).delete(f"{KEYS}/{key.pk}")

    assert response.status_code == 204
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_a_viewer_revokes_their_own_key(team):
    key = key_for(team, Role.VIEWER)

    assert team.client("viewer").delete(f"{KEYS}/{key.pk}").status_code == 204
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_revoking_a_revoked_key_keeps_the_first_revocation_time(team):
    key = key_for(team)
    client = team.client("developer")
    client.delete(f"{KEYS}/{key.pk}")
    key.refresh_from_db()
    first = key.revoked_at

    with time_machine.travel(timezone.now() + timedelta(minutes=5)):
        assert client.delete(f"{KEYS}/{key.pk}").status_code == 204

    key.refresh_from_db()
    assert key.revoked_at == first


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"revoked": "true"}, {"revoked"}),
        ({"revoked": "false"}, {"live", "viewer"}),
        ({"role": "viewer"}, {"viewer"}),
        ({"search": "liv"}, {"live"}),
        ({}, {"live", "revoked", "viewer"}),
    ],
)
def test_keys_can_be_filtered(team, params, expected):
    key_for(team, Role.DEVELOPER, creator="owner", name="live")
    key_for(team, Role.DEVELOPER, creator="owner", name="revoked", revoked_at=timezone.now())
    key_for(team, Role.VIEWER, creator="owner", name="viewer")

    response = team.client("owner").get(KEYS, params)

    assert response.status_code == 200, response.json()
    assert {row["name"] for row in response.json()["results"]} == expected


@pytest.mark.parametrize("slash", ["", "/"], ids=["bare", "slash"])
def test_key_paths_answer_with_and_without_a_trailing_slash(team, slash):
    key = key_for(team)
    client = team.client("developer")

    assert client.get(KEYS + slash).status_code == 200
    assert client.get(f"{KEYS}/{key.pk}{slash}").status_code == 200
    assert client.post(KEYS + slash, {"project": str(team.project.pk), "name": "ci"}).status_code == 201
    assert client.delete(f"{KEYS}/{key.pk}{slash}").status_code == 204


def test_listing_keys_takes_a_bounded_number_of_queries(team, django_assert_max_num_queries):
    for n in range(20):
        ApiKeyFactory(project=team.project, created_by=team.members["developer" if n % 2 else "viewer"])
    client = team.client("admin")

    with django_assert_max_num_queries(5):
        response = client.get(KEYS)

    assert len(response.json()["results"]) == 20


def test_listing_keys_with_a_project_filter_takes_a_bounded_number_of_queries(team, django_assert_max_num_queries):
    for _ in range(20):
        ApiKeyFactory(project=team.project, created_by=team.members["developer"])
    client = team.client("developer")

    with django_assert_max_num_queries(5):
        response = client.get(KEYS, {"project": str(team.project.pk)})

    assert len(response.json()["results"]) == 20


def test_a_key_created_elsewhere_is_not_listed_even_for_its_creator_once_they_leave(team):
    developer = team.members["developer"]
    project = ProjectFactory()
    membership = MembershipFactory(user=developer, project=project, role=Role.DEVELOPER)
    key = ApiKeyFactory(project=project, created_by=developer)
    assert str(key.pk) in listed_ids(team.client("developer").get(KEYS))

    membership.delete()

    assert str(key.pk) not in listed_ids(team.client("developer").get(KEYS))
