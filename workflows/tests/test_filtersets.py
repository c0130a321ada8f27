"""One test per filter: each narrows the list it is given, and each is reachable through the API."""

import pytest

from accounts.tests.factories import UserFactory
from projects.tests.factories import MembershipFactory, ProjectFactory
from sparkops.roles import Role
from sparkops.testing import client_for
from workflows.filtersets import WorkflowFilterSet
from workflows.models import Workflow
from workflows.tests.factories import WorkflowFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/workflows"


def filtered(**params) -> list[str]:
    filterset = WorkflowFilterSet(params, queryset=Workflow.objects.all())
    assert filterset.is_valid(), filterset.errors
    return sorted(w.name for w in filterset.qs)


def names(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return [row["name"] for row in response.json()["results"]]


@pytest.fixture
def member():
    """A viewer in Main (Alpha, Beta inactive) and Side (Gamma); Hidden is in a project they are not in."""
    user = UserFactory()
    main, side = ProjectFactory(), ProjectFactory()
    for project in (main, side):
        MembershipFactory(user=user, project=project, role=Role.VIEWER)
    WorkflowFactory(project=main, name="Alpha", slug="alpha", description="Ledger sync")
    WorkflowFactory(project=main, name="Beta", slug="beta-desk", active=False, description="Harbour")
    WorkflowFactory(project=side, name="Gamma", slug="gamma")
    WorkflowFactory(name="Hidden", slug="alpha", description="Ledger")
    user.main, user.side = main, side
    return user


def test_project_filter_narrows_to_that_project(member):
    assert filtered(project=str(member.side.pk)) == ["Gamma"]
    assert names(client_for(member).get(URL, {"project": str(member.side.pk)})) == ["Gamma"]


def test_project_filter_refuses_a_malformed_id(member):
    assert not WorkflowFilterSet({"project": "nope"}, queryset=Workflow.objects.all()).is_valid()
    assert client_for(member).get(URL, {"project": "nope"}).status_code == 404


@pytest.mark.parametrize(("value", "expected"), [("true", ["Alpha", "Gamma", "Hidden"]), ("false", ["Beta"])])
def test_active_filter_narrows_to_that_state(member, value, expected):
    assert filtered(active=value) == expected
    assert names(client_for(member).get(URL, {"active": value})) == [n for n in expected if n != "Hidden"]


def test_slug_filter_matches_the_exact_slug_in_the_callers_projects_only(member):
    assert filtered(slug="alpha") == ["Alpha", "Hidden"]
    assert names(client_for(member).get(URL, {"slug": "alpha"})) == ["Alpha"]
    assert names(client_for(member).get(URL, {"slug": "alp"})) == []


@pytest.mark.parametrize(("term", "expected"), [("gam", ["Gamma"]), ("desk", ["Beta"]), ("ledger", ["Alpha"])])
def test_search_matches_name_slug_and_description(member, term, expected):
    assert names(client_for(member).get(URL, {"search": term})) == expected


@pytest.mark.parametrize(
    ("ordering", "expected"),
    [("", ["Alpha", "Beta", "Gamma"]), ("-name", ["Gamma", "Beta", "Alpha"]), ("-slug", ["Gamma", "Beta", "Alpha"])],
)
def test_ordering_orders_by_the_allowed_fields(member, ordering, expected):
    assert names(client_for(member).get(URL, {"ordering": ordering})) == expected
