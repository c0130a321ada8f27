"""One test per filter: each narrows the list it is given, and each is reachable through the API."""

import pytest

from accounts.tests.factories import UserFactory
from projects.filtersets import MembershipFilterSet, ProjectFilterSet
from projects.models import Membership, Project
from projects.tests.factories import MembershipFactory, ProjectFactory
from sparkops.roles import Role
from sparkops.testing import client_for

pytestmark = pytest.mark.django_db

PROJECTS_URL = "/api/v1/projects"
MEMBERSHIPS_URL = "/api/v1/memberships"


def filtered(filterset_class, queryset, **params) -> list:
    filterset = filterset_class(params, queryset=queryset)
    assert filterset.is_valid(), filterset.errors
    return list(filterset.qs)


def names(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return [row["name"] for row in response.json()["results"]]


def emails(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return [row["email"] for row in response.json()["results"]]


@pytest.fixture
def member():
    """A user in three projects: Alpha (archived), Beta and Gamma."""
    user = UserFactory()
    rows = [("Alpha", "alpha", True, "Ledger"), ("Beta", "beta-desk", False, "Harbour"), ("Gamma", "gamma", False, "")]
    for name, slug, archived, description in rows:
        project = ProjectFactory(name=name, slug=slug, archived=archived, description=description)
        MembershipFactory(user=user, project=project, role=Role.OWNER)
    return user


# ------------------------------------------------------------------------------
# ProjectFilterSet
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "expected"), [("true", ["Alpha"]), ("false", ["Beta", "Gamma"])])
def test_project_archived_filter_narrows_to_that_state(member, value, expected):
    assert [p.name for p in filtered(ProjectFilterSet, Project.objects.all(), archived=value)] == expected
    assert names(client_for(member).get(PROJECTS_URL, {"archived": value})) == expected


def test_project_slug_filter_narrows_to_that_project(member):
    assert [p.name for p in filtered(ProjectFilterSet, Project.objects.all(), slug="beta-desk")] == ["Beta"]
    assert names(client_for(member).get(PROJECTS_URL, {"slug": "beta-desk"})) == ["Beta"]


def test_project_slug_filter_does_not_reach_projects_the_caller_is_not_in(member):
    ProjectFactory(name="Hidden", slug="hidden")
    assert names(client_for(member).get(PROJECTS_URL, {"slug": "hidden"})) == []


@pytest.mark.parametrize(("term", "expected"), [("gam", ["Gamma"]), ("desk", ["Beta"]), ("ledger", ["Alpha"])])
def test_project_search_matches_name_slug_and_description(member, term, expected):
    assert names(client_for(member).get(PROJECTS_URL, {"search": term})) == expected


@pytest.mark.parametrize(
    ("ordering", "expected"),
    [
        ("", ["Alpha", "Beta", "Gamma"]),  # by name unless asked otherwise
        ("-name", ["Gamma", "Beta", "Alpha"]),
        ("-slug", ["Gamma", "Beta", "Alpha"]),
        ("-created_at", ["Gamma", "Beta", "Alpha"]),
    ],
)
def test_project_ordering_orders_by_the_allowed_fields(member, ordering, expected):
    assert names(client_for(member).get(PROJECTS_URL, {"ordering": ordering})) == expected


def test_project_ordering_refuses_fields_not_allowed(member):
    response = client_for(member).get(PROJECTS_URL, {"ordering": "-description"})
    assert response.status_code == 400
    assert "allowed: name, slug, created_at" in response.json()["errors"]["ordering"][0]


# ------------------------------------------------------------------------------
# MembershipFilterSet
# ------------------------------------------------------------------------------
@pytest.fixture
def crew():
    """An owner in two projects; Main has ada (admin) and bob (viewer), Side has cy (developer)."""
    owner = UserFactory(email="owner@example.com", name="Olive Owner")
    main, side = ProjectFactory(name="Main"), ProjectFactory(name="Side")
    for project in (main, side):
        MembershipFactory(user=owner, project=project, role=Role.OWNER)
    MembershipFactory(project=main, role=Role.ADMIN, user=UserFactory(email="ada@example.com", name="Ada Lovelace"))
    MembershipFactory(project=main, role=Role.VIEWER, user=UserFactory(email="bob@example.com", name="Bob Byte"))
    MembershipFactory(project=side, role=Role.DEVELOPER, user=UserFactory(email="cy@example.com", name="Cy Ber"))
    return owner, main, side


def test_membership_project_filter_narrows_to_that_project(crew):
    owner, _, side = crew
    rows = filtered(MembershipFilterSet, Membership.objects.all(), project=str(side.pk))
    assert sorted(m.user.email for m in rows) == ["cy@example.com", "owner@example.com"]
    response = client_for(owner).get(MEMBERSHIPS_URL, {"project": str(side.pk)})
    assert sorted(emails(response)) == ["cy@example.com", "owner@example.com"]


def test_membership_role_filter_narrows_to_that_role(crew):
    owner, main, _ = crew
    assert [m.user.email for m in filtered(MembershipFilterSet, Membership.objects.all(), role="viewer")] == [
        "bob@example.com"
    ]
    response = client_for(owner).get(MEMBERSHIPS_URL, {"project": str(main.pk), "role": "admin"})
    assert emails(response) == ["ada@example.com"]


def test_membership_role_filter_refuses_an_unknown_role(crew):
    owner = crew[0]
    response = client_for(owner).get(MEMBERSHIPS_URL, {"role": "root"})
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"role"}


def test_membership_user_filter_narrows_to_that_user(crew):
    owner, main, side = crew
    rows = filtered(MembershipFilterSet, Membership.objects.all(), user=str(owner.pk))
    assert {m.project for m in rows} == {main, side}
    response = client_for(owner).get(MEMBERSHIPS_URL, {"user": owner.pk})
    assert response.json()["count"] == 2
    assert {row["project"] for row in response.json()["results"]} == {str(main.pk), str(side.pk)}


@pytest.mark.parametrize(("term", "expected"), [("ada@", ["ada@example.com"]), ("byte", ["bob@example.com"])])
def test_membership_search_matches_email_and_name(crew, term, expected):
    owner = crew[0]
    assert emails(client_for(owner).get(MEMBERSHIPS_URL, {"search": term})) == expected


def test_membership_ordering_orders_by_email(crew):
    owner, main, _ = crew
    response = client_for(owner).get(MEMBERSHIPS_URL, {"project": str(main.pk), "ordering": "-user__email"})
    assert emails(response) == ["owner@example.com", "bob@example.com", "ada@example.com"]
