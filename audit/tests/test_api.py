"""GET /audit: admins and owners of a project read its trail, filtered and cursor-paginated."""

import pytest

from agents.tests.factories import AgentFactory
from audit.models import AuditEntry
from sparkops.roles import Role

pytestmark = pytest.mark.django_db
AUDIT = "/api/v1/audit"


def rows(response) -> list[dict]:
    assert response.status_code == 200, response.json()
    return response.json()["results"]


@pytest.fixture
def changes(team):
    """An agent edited in the team's project and one in the outsider's."""
    for project in (team.project, team.other_project):
        agent = AgentFactory(project=project, model="m1")
        agent.model = "m2"
        agent.save()


@pytest.mark.parametrize("who", [Role.ADMIN, Role.OWNER])
def test_admins_read_their_projects_trail_only(team, changes, who):
    got = rows(team.client(who).get(AUDIT, {"object_type": "agents.agent"}))
    assert {row["project"] for row in got} == {str(team.project.pk)}
    assert [row["action"] for row in got] == ["update", "create"]  # newest first


@pytest.mark.parametrize("who", [Role.DEVELOPER, Role.VIEWER])
def test_members_below_admin_see_nothing_and_are_refused_a_named_project(team, changes, who):
    assert rows(team.client(who).get(AUDIT)) == []
    assert team.client(who).get(AUDIT, {"project": str(team.project.pk)}).status_code == 403


def test_an_outsider_gets_404_for_the_project(team, changes):
    assert team.client("outsider").get(AUDIT, {"project": str(team.project.pk)}).status_code == 404


def test_filters_by_action_object_type_actor_and_time(team, changes):
    client = team.client(Role.ADMIN)
    assert [r["object_type"] for r in rows(client.get(AUDIT, {"action": "update"}))] == ["agents.agent"]
    assert rows(client.get(AUDIT, {"object_type": "agents.tool"})) == []
    assert rows(client.get(AUDIT, {"actor": str(team.members[Role.ADMIN].pk)})) == []
    entry = AuditEntry.objects.filter(project=team.project, action="update").get()
    later = rows(client.get(AUDIT, {"since": entry.at.isoformat().replace("+00:00", "Z")}))
    assert [r["id"] for r in later] == [entry.pk]
    assert client.get(AUDIT, {"since": "yesterday"}).status_code == 400
    assert client.get(AUDIT, {"action": "explode"}).status_code == 400


def test_pages_by_cursor(team, changes):
    client = team.client(Role.ADMIN)
    first = client.get(AUDIT, {"page_size": 1, "object_type": "agents.agent"}).json()
    second = client.get(first["next"]).json()
    assert [first["results"][0]["action"], second["results"][0]["action"]] == ["update", "create"]


def test_the_trail_is_read_only(team):
    assert team.client(Role.OWNER).post(AUDIT, {}, format="json").status_code == 405
