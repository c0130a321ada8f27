from accounts.tests.factories import ApiKeyFactory
from sparkops.testing import client_for


def test_it_lists_projects_with_a_jwt_and_with_an_api_key(team):
    response = team.client("viewer").get("/api/v1/projects")
    assert response.status_code == 200
    assert [p["id"] for p in response.json()["results"]] == [str(team.project.pk)]
    key = ApiKeyFactory(project=team.project, created_by=team.members["developer"])
    response = client_for(api_key=key.raw).get("/api/v1/projects/")
    assert response.status_code == 200, response.json()
    assert response.json()["results"][0]["my_role"] == "developer"
