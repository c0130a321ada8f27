"""/api/v1/workflows: the role matrix, isolation between projects, versions, publish, diff, validate."""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.tests.factories import ApiKeyFactory
from sparkops.roles import Role
from sparkops.testing import ROLES, client_for
from workflows import services
from workflows.models import Workflow, WorkflowVersion
from workflows.tests.factories import INPUT_SCHEMA, WorkflowFactory, agent_step, catalog_for, definition, tool_step

LIST_URL = "/api/v1/workflows"
VALIDATE_URL = f"{LIST_URL}/validate"
ERROR_KEYS = {"status", "code", "message", "errors"}
WHO = [*ROLES, "outsider"]
WRITERS = {Role.OWNER, Role.ADMIN, Role.DEVELOPER}


def detail_url(workflow, suffix: str = "") -> str:
    pk = getattr(workflow, "pk", workflow)
    return f"{LIST_URL}/{pk}{suffix}"


def assert_error(response, status: int) -> dict:
    body = response.json()
    assert response.status_code == status, body
    assert set(body) == ERROR_KEYS
    assert body["status"] == status
    return body


def expected_status(who: str, ok: int, needed: str = Role.DEVELOPER) -> int:
    if who == "outsider":
        return 404
    return ok if Role.at_least(who, needed) else 403


@pytest.fixture
def team(team):
    catalog_for(team.project)
    catalog_for(team.other_project)
    return team


def make_workflow(project, slug: str = "triage", *, publish: bool = False, **fields) -> Workflow:
    values = {"name": slug.title(), "definition": definition(), "input_schema": INPUT_SCHEMA} | fields
    return services.workflow_create(project=project, user=None, slug=slug, publish=publish, **values)


@pytest.fixture
def workflow(team) -> Workflow:
    """Two versions: v1 published (fetch, summarize), v2 a draft that adds a review step."""
    workflow = make_workflow(team.project, publish=True)
    two = definition(*definition()["steps"], {"key": "review", "kind": "approval", "depends_on": ["summarize"]})
    services.workflow_update(workflow=workflow, user=None, definition=two)
    return workflow


def payload(in_project, /, **overrides) -> dict:
    return {
        "project": str(in_project.pk),
        "name": "Research",
        "slug": "research",
        "description": "Digs",
        "definition": definition(),
        "input_schema": INPUT_SCHEMA,
    } | overrides


def state(workflow: Workflow) -> tuple:
    """What a refused write must leave unchanged."""
    row = Workflow.objects.filter(pk=workflow.pk).values_list("name", "slug", "active").first()
    return row, list(WorkflowVersion.objects.filter(workflow_id=workflow.pk).values_list("number", "published"))


# ------------------------------------------------------------------------------
# Authentication and isolation, for every endpoint
# ------------------------------------------------------------------------------
ENDPOINTS = [
    ("get", ""),
    ("patch", ""),
    ("put", ""),
    ("delete", ""),
    ("get", "/versions"),
    ("get", "/versions/1"),
    ("post", "/versions/2/publish"),
    ("get", "/diff?from=1&to=2"),
]


@pytest.mark.parametrize(("method", "suffix"), [*ENDPOINTS, ("get", None), ("post", None), ("post", "validate")])
def test_every_endpoint_needs_authentication(api_client, workflow, method, suffix):
    before = state(workflow)
    url = {None: LIST_URL, "validate": VALIDATE_URL}.get(suffix) or detail_url(workflow, suffix)
    response = getattr(api_client, method)(url, {"name": "Hacked"})
    assert assert_error(response, 401)["code"] == "not_authenticated"
    assert state(workflow) == before


@pytest.mark.parametrize(("method", "suffix"), ENDPOINTS)
def test_an_outsider_gets_404_from_every_endpoint_and_changes_nothing(team, workflow, method, suffix):
    before = state(workflow)
    response = getattr(team.client("outsider"), method)(detail_url(workflow, suffix), {"name": "Hacked"})
    assert assert_error(response, 404)["code"] == "not_found"
    assert state(workflow) == before


def test_an_outsider_sees_only_their_own_projects_workflows(team, workflow):
    theirs = make_workflow(team.other_project, "theirs")
    rows = team.client("outsider").get(LIST_URL).json()["results"]
    assert [row["id"] for row in rows] == [str(theirs.pk)]


@pytest.mark.parametrize("project", ["team", "unknown", "not-a-uuid"])
def test_listing_a_project_the_caller_is_not_in_is_404(team, workflow, project):
    value = {"team": str(team.project.pk), "unknown": str(uuid.uuid4()), "not-a-uuid": "nope"}[project]
    assert assert_error(team.client("outsider").get(LIST_URL, {"project": value}), 404)["message"] == "No such project."


# ------------------------------------------------------------------------------
# List and retrieve
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_every_member_lists_the_projects_workflows_with_their_newest_definition(team, workflow, role):
    make_workflow(team.other_project, "elsewhere")
    response = team.client(role).get(LIST_URL)
    assert response.status_code == 200
    (row,) = response.json()["results"]
    assert (row["id"], row["project"], row["slug"], row["latest_version"]) == (
        str(workflow.pk),
        str(team.project.pk),
        "triage",
        2,
    )
    assert [step["key"] for step in row["definition"]["steps"]] == ["fetch", "summarize", "review"]
    assert row["input_schema"] == INPUT_SCHEMA


@pytest.mark.parametrize("who", WHO)
def test_retrieve_needs_membership(team, workflow, who):
    response = team.client(who).get(detail_url(workflow))
    assert response.status_code == expected_status(who, 200, Role.VIEWER)
    if response.status_code == 200:
        assert response.json()["latest_version"] == 2


def test_a_workflow_without_versions_reads_with_null_version_fields(team):
    bare = WorkflowFactory(project=team.project)  # made outside the services
    body = team.client("viewer").get(detail_url(bare)).json()
    assert (body["latest_version"], body["definition"], body["input_schema"]) == (None, None, None)


def test_retrieve_of_an_unknown_workflow_is_404(team):
    assert_error(team.client("owner").get(detail_url(uuid.uuid4())), 404)


def _list_queries(client, project) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(LIST_URL, {"project": str(project.pk)})
    assert response.status_code == 200
    return len(queries), len(response.json()["results"])


def test_listing_takes_a_fixed_number_of_queries(team, django_assert_max_num_queries):
    client = team.client("viewer")
    for i in range(2):
        make_workflow(team.project, f"few-{i}")
    few, count = _list_queries(client, team.project)
    assert count == 2
    for i in range(20):
        workflow = make_workflow(team.project, f"many-{i}")
        services.workflow_update(workflow=workflow, user=None, definition=definition(tool_step("fetch")))
    with django_assert_max_num_queries(6):
        client.get(LIST_URL, {"project": str(team.project.pk)})
    many, count = _list_queries(client, team.project)
    assert count == 22
    assert many == few


# ------------------------------------------------------------------------------
# Create
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("who", ROLES)
def test_create_needs_the_developer_role_and_makes_version_1(team, who):
    response = team.client(who).post(LIST_URL, payload(team.project))
    if who not in WRITERS:
        assert "developer role" in assert_error(response, 403)["message"]
        assert not Workflow.objects.filter(slug="research").exists()
        return
    assert response.status_code == 201, response.json()
    body = response.json()
    workflow = Workflow.objects.get(pk=body["id"])
    assert (workflow.project, workflow.name, workflow.slug, workflow.description) == (
        team.project,
        "Research",
        "research",
        "Digs",
    )
    version = workflow.versions.get()
    assert (version.number, version.published, version.created_by) == (1, False, team.members[who])
    assert (version.definition, version.input_schema) == (definition(), INPUT_SCHEMA)
    assert (body["latest_version"], body["definition"], body["input_schema"]) == (1, definition(), INPUT_SCHEMA)


def test_create_in_a_project_the_caller_is_not_in_answers_as_if_it_did_not_exist(team):
    response = team.client("outsider").post(LIST_URL, payload(team.project))
    unknown = team.client("outsider").post(LIST_URL, payload(team.project, project=str(uuid.uuid4())))
    body = assert_error(response, 400)
    assert list(body["errors"]) == ["project"]
    assert assert_error(unknown, 400)["errors"]["project"][0].startswith("Invalid pk")
    assert not Workflow.objects.filter(slug="research").exists()


def test_create_defaults_the_input_schema(team):
    body = payload(team.project, definition=definition({"key": "gate", "kind": "approval"}))
    del body["input_schema"]
    response = team.client("developer").post(LIST_URL, body)
    assert response.status_code == 201, response.json()
    assert Workflow.objects.get(slug="research").versions.get().input_schema == {}


def test_create_refuses_an_invalid_definition_with_step_level_errors(team):
    bad = definition(tool_step("fetch", depends_on=["nope"]), agent_step("write", agent="ghost"))
    body = assert_error(team.client("developer").post(LIST_URL, payload(team.project, definition=bad)), 400)
    assert body["code"] == "invalid"
    assert body["message"] == "Invalid input: definition."
    assert body["errors"] == {
        "definition": {
            "steps": {
                "fetch": ["depends_on: unknown step 'nope'."],
                "write": ["agent: no agent 'ghost' in this project."],
            }
        }
    }
    assert not Workflow.objects.filter(slug="research").exists()


def test_create_refuses_an_invalid_input_schema_on_its_field(team):
    response = team.client("developer").post(LIST_URL, payload(team.project, input_schema={"type": "string"}))
    body = assert_error(response, 400)
    assert body["errors"] == {"input_schema": ['type: the inputs are one object, so the type must be "object".']}


def test_create_refuses_a_slug_taken_in_the_project(team, workflow):
    body = assert_error(team.client("developer").post(LIST_URL, payload(team.project, slug="triage")), 400)
    assert body["errors"] == {"slug": [services.SLUG_TAKEN]}
    assert Workflow.objects.filter(slug="triage").count() == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name"),
        ({"slug": "not a slug"}, "slug"),
        ({"definition": None}, "definition"),
        ({"project": None}, "project"),
        ({"active": "maybe"}, "active"),
    ],
)
def test_create_refuses_bad_fields_with_field_errors(team, change, field):
    body = assert_error(team.client("developer").post(LIST_URL, payload(team.project, **change)), 400)
    assert list(body["errors"]) == [field]
    assert not Workflow.objects.exists()


@pytest.mark.parametrize("missing", ["name", "slug", "definition", "project"])
def test_create_needs_its_required_fields(team, missing):
    body = payload(team.project)
    del body[missing]
    assert list(assert_error(team.client("developer").post(LIST_URL, body), 400)["errors"]) == [missing]


def test_an_api_key_writes_with_the_lower_of_its_role_and_its_creators(team):
    developer = team.members[Role.DEVELOPER]
    viewer_key = ApiKeyFactory(project=team.project, created_by=developer, role=Role.VIEWER)
    developer_key = ApiKeyFactory(project=team.project, created_by=developer, role=Role.OWNER)
    assert_error(client_for(api_key=viewer_key.raw).post(LIST_URL, payload(team.project)), 403)
    response = client_for(api_key=developer_key.raw).post(LIST_URL, payload(team.project))
    assert response.status_code == 201, response.json()
    assert Workflow.objects.get(slug="research").versions.get().created_by == developer


# ------------------------------------------------------------------------------
# Update and delete
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("who", WHO)
def test_patching_the_name_needs_the_developer_role_and_adds_no_version(team, workflow, who):
    before = state(workflow)
    response = team.client(who).patch(detail_url(workflow), {"name": "Renamed", "description": "New"})
    assert response.status_code == expected_status(who, 200), response.json()
    if response.status_code != 200:
        assert state(workflow) == before
        return
    workflow.refresh_from_db()
    assert (workflow.name, workflow.description) == ("Renamed", "New")
    assert workflow.versions.count() == 2
    assert response.json()["latest_version"] == 2


def test_patching_the_definition_adds_a_version_and_answers_with_it(team, workflow):
    new = definition(tool_step("fetch", timeout_seconds=60))
    response = team.client("developer").patch(detail_url(workflow), {"definition": new})
    assert response.status_code == 200, response.json()
    assert (response.json()["latest_version"], response.json()["definition"]) == (3, new)
    version = workflow.versions.get(number=3)
    assert (version.definition, version.input_schema, version.published) == (new, INPUT_SCHEMA, False)
    assert version.created_by == team.members[Role.DEVELOPER]
    assert workflow.versions.get(number=1).definition == definition()


def test_patching_the_input_schema_alone_adds_a_version(team, workflow):
    schema = {**INPUT_SCHEMA, "title": "Inputs"}
    response = team.client("developer").patch(detail_url(workflow), {"input_schema": schema})
    assert response.status_code == 200, response.json()
    assert workflow.versions.get(number=3).input_schema == schema
    assert response.json()["input_schema"] == schema


def test_patching_an_unchanged_definition_adds_no_version(team, workflow):
    current = workflow.versions.get(number=2).definition
    response = team.client("developer").patch(detail_url(workflow), {"definition": current})
    assert response.status_code == 200, response.json()
    assert workflow.versions.count() == 2


def test_patching_an_invalid_definition_changes_nothing(team, workflow):
    before = state(workflow)
    bad = definition(agent_step("a", prompt="{{ steps.b.output }}"))
    body = assert_error(team.client("developer").patch(detail_url(workflow), {"name": "X", "definition": bad}), 400)
    assert body["errors"] == {"definition": {"steps": {"a": ["prompt: unknown step 'b'."]}}}
    assert state(workflow) == before


def test_patching_cannot_move_a_workflow_to_another_project(team, workflow):
    body = assert_error(team.client("owner").patch(detail_url(workflow), {"project": str(team.other_project.pk)}), 400)
    assert list(body["errors"]) == ["project"]
    other = team.client("owner").patch(detail_url(workflow), {"project": str(uuid.uuid4())})
    assert list(assert_error(other, 400)["errors"]) == ["project"]
    assert Workflow.objects.get(pk=workflow.pk).project == team.project


def test_patching_to_a_taken_slug_is_refused_on_the_slug_field(team, workflow):
    make_workflow(team.project, "taken")
    body = assert_error(team.client("developer").patch(detail_url(workflow), {"slug": "taken"}), 400)
    assert body["errors"] == {"slug": [services.SLUG_TAKEN]}


def test_put_replaces_the_fields_and_adds_a_version_for_a_new_definition(team, workflow):
    new = definition({"key": "gate", "kind": "approval"})
    body = payload(team.project, name="Replaced", slug="replaced", definition=new, input_schema={})
    response = team.client("developer").put(detail_url(workflow), body)
    assert response.status_code == 200, response.json()
    workflow.refresh_from_db()
    assert (workflow.name, workflow.slug) == ("Replaced", "replaced")
    assert workflow.versions.get(number=3).definition == new


@pytest.mark.parametrize("who", WHO)
def test_delete_needs_the_developer_role(team, workflow, who):
    response = team.client(who).delete(detail_url(workflow))
    assert response.status_code == expected_status(who, 204)
    deleted = not Workflow.objects.filter(pk=workflow.pk).exists()
    assert deleted == (response.status_code == 204)
    assert WorkflowVersion.objects.filter(workflow_id=workflow.pk).exists() != deleted


# ------------------------------------------------------------------------------
# Validate
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_every_member_may_validate_a_draft_without_saving_it(team, role):
    body = {"project": str(team.project.pk), "definition": definition(), "input_schema": INPUT_SCHEMA}
    response = team.client(role).post(VALIDATE_URL, body)
    assert response.status_code == 200, response.json()
    assert response.json() == {"valid": True}
    assert not Workflow.objects.exists()


def test_validate_answers_400_with_step_level_errors(team):
    cyclic = definition(
        {"key": "a", "kind": "approval", "depends_on": ["b"]}, {"key": "b", "kind": "approval", "depends_on": ["a"]}
    )
    body = {"project": str(team.project.pk), "definition": cyclic, "input_schema": []}
    errors = assert_error(team.client("viewer").post(VALIDATE_URL, body), 400)["errors"]
    assert errors == {
        "input_schema": [
            'Must be a JSON Schema object, e.g. {"type": "object", "properties": {"topic": {"type": "string"}}}.'
        ],
        "definition": {"steps": {"a": ["cycle: a -> b -> a (each step waits for the next)."]}},
    }


def test_validate_checks_against_the_named_projects_catalog(team):
    team.project.agents.all().delete()  # the other project still has a "writer"
    body = {"project": str(team.project.pk), "definition": definition(), "input_schema": INPUT_SCHEMA}
    errors = assert_error(team.client("developer").post(VALIDATE_URL, body), 400)["errors"]
    assert errors == {"definition": {"steps": {"summarize": ["agent: no agent 'writer' in this project."]}}}


def test_validate_for_a_project_the_caller_is_not_in_answers_as_if_it_did_not_exist(team):
    body = {"project": str(team.project.pk), "definition": definition(), "input_schema": INPUT_SCHEMA}
    assert list(assert_error(team.client("outsider").post(VALIDATE_URL, body), 400)["errors"]) == ["project"]


@pytest.mark.parametrize("missing", ["project", "definition"])
def test_validate_needs_project_and_definition(team, missing):
    body = {"project": str(team.project.pk), "definition": definition()}
    del body[missing]
    assert list(assert_error(team.client("developer").post(VALIDATE_URL, body), 400)["errors"]) == [missing]


# ------------------------------------------------------------------------------
# Versions
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("who", WHO)
def test_versions_list_oldest_first_for_members(team, workflow, who):
    response = team.client(who).get(detail_url(workflow, "/versions"))
    assert response.status_code == expected_status(who, 200, Role.VIEWER)
    if response.status_code == 200:
        body = response.json()
        assert body["count"] == 2
        assert [(row["number"], row["published"]) for row in body["results"]] == [(1, True), (2, False)]
        assert body["results"][0]["definition"] == definition()
        assert body["results"][0]["workflow"] == str(workflow.pk)


def test_listing_versions_takes_a_fixed_number_of_queries(team, workflow, django_assert_max_num_queries):
    client = team.client("viewer")
    with CaptureQueriesContext(connection) as few:
        client.get(detail_url(workflow, "/versions"))
    for i in range(20):
        services.workflow_update(
            workflow=workflow, user=None, description=str(i), definition=definition(tool_step(f"s{i}"))
        )
    with django_assert_max_num_queries(7), CaptureQueriesContext(connection) as many:
        response = client.get(detail_url(workflow, "/versions"))
    assert response.json()["count"] == 22
    assert len(many) == len(few)


def test_versions_are_paginated(team, workflow):
    body = team.client("viewer").get(detail_url(workflow, "/versions"), {"page_size": 1, "page": 2}).json()
    assert (body["count"], [row["number"] for row in body["results"]]) == (2, [2])


@pytest.mark.parametrize("who", WHO)
def test_one_version_for_members(team, workflow, who):
    response = team.client(who).get(detail_url(workflow, "/versions/1"))
    assert response.status_code == expected_status(who, 200, Role.VIEWER)
    if response.status_code == 200:
        assert (response.json()["number"], response.json()["definition"]) == (1, definition())


@pytest.mark.parametrize("number", ["3", "0", "9999999999"])
def test_a_version_that_does_not_exist_is_404(team, workflow, number):
    assert_error(team.client("owner").get(detail_url(workflow, f"/versions/{number}")), 404)


@pytest.mark.parametrize("who", WHO)
def test_publishing_needs_the_developer_role(team, workflow, who):
    response = team.client(who).post(detail_url(workflow, "/versions/2/publish"))
    assert response.status_code == expected_status(who, 200)
    published = WorkflowVersion.objects.get(workflow=workflow, number=2).published
    assert published == (response.status_code == 200)
    if published:
        assert response.json()["published"] is True
        assert response.json()["published_at"]


def test_publishing_twice_is_harmless_and_keeps_the_first_time(team, workflow):
    client = team.client("developer")
    first = client.post(detail_url(workflow, "/versions/2/publish")).json()["published_at"]
    again = client.post(detail_url(workflow, "/versions/2/publish"))
    assert again.status_code == 200
    assert again.json()["published_at"] == first
    assert WorkflowVersion.objects.filter(workflow=workflow, published=True).count() == 2


def test_publishing_a_version_whose_agent_was_disabled_is_refused(team, workflow):
    team.project.agents.update(status="disabled")
    body = assert_error(team.client("developer").post(detail_url(workflow, "/versions/2/publish")), 400)
    assert body["errors"] == {"definition": {"steps": {"summarize": ["agent: 'writer' is disabled."]}}}
    assert not WorkflowVersion.objects.get(workflow=workflow, number=2).published


def test_publishing_a_version_that_does_not_exist_is_404(team, workflow):
    assert_error(team.client("developer").post(detail_url(workflow, "/versions/7/publish")), 404)


# ------------------------------------------------------------------------------
# Diff
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("who", WHO)
def test_diff_summarises_steps_for_members(team, workflow, who):
    response = team.client(who).get(detail_url(workflow, "/diff"), {"from": 1, "to": 2})
    assert response.status_code == expected_status(who, 200, Role.VIEWER)
    if response.status_code == 200:
        body = response.json()
        assert {k: body[k] for k in ("from", "to", "added", "removed", "changed", "input_schema_changed")} == {
            "from": 1,
            "to": 2,
            "added": ["review"],
            "removed": [],
            "changed": [],
            "input_schema_changed": False,
        }
        assert body["text"].startswith("--- v1\n+++ v2\n")
        assert '+        "key": "review",' in body["text"]


@pytest.mark.parametrize(
    ("query", "field"),
    [({"to": 2}, "from"), ({"from": 1}, "to"), ({"from": "x", "to": 2}, "from"), ({"from": 1, "to": 0}, "to")],
)
def test_diff_refuses_missing_or_bad_parameters(team, workflow, query, field):
    body = assert_error(team.client("viewer").get(detail_url(workflow, "/diff"), query), 400)
    assert list(body["errors"]) == [field]


def test_diff_refuses_a_version_that_does_not_exist_on_its_parameter(team, workflow):
    body = assert_error(team.client("viewer").get(detail_url(workflow, "/diff"), {"from": 1, "to": 5}), 400)
    assert body["errors"] == {"to": ["This workflow has no version 5."]}


def test_an_outsider_learns_nothing_from_bad_diff_parameters(team, workflow):
    assert_error(team.client("outsider").get(detail_url(workflow, "/diff"), {"from": "x"}), 404)


# ------------------------------------------------------------------------------
# The schema
# ------------------------------------------------------------------------------
def test_every_workflow_endpoint_is_in_the_openapi_schema(team):
    response = client_for().get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    expected = {
        "/api/v1/workflows/": {"get", "post"},
        "/api/v1/workflows/{id}/": {"get", "put", "patch", "delete"},
        "/api/v1/workflows/validate/": {"post"},
        "/api/v1/workflows/{id}/versions/": {"get"},
        "/api/v1/workflows/{id}/versions/{number}/": {"get"},
        "/api/v1/workflows/{id}/versions/{number}/publish/": {"post"},
        "/api/v1/workflows/{id}/diff/": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
    versions = paths["/api/v1/workflows/{id}/versions/"]["get"]["responses"]["200"]
    assert versions["content"]["application/json"]["schema"]["$ref"].endswith("PaginatedWorkflowVersionList")
    diff_params = {p["name"] for p in paths["/api/v1/workflows/{id}/diff/"]["get"]["parameters"]}
    assert {"from", "to"} <= diff_params


# ------------------------------------------------------------------------------
# Approval gates name a role from developer up
# ------------------------------------------------------------------------------
VIEWER_GATE = {"key": "gate", "kind": "approval", "role": "viewer", "depends_on": ["summarize"]}
GATE_ERRORS = {
    "definition": {
        "steps": {
            "gate": [
                "role: must be one of owner, admin, developer; "
                "a gate cannot name a role below the developers who edit the workflow."
            ]
        }
    }
}


def test_creating_a_workflow_with_a_gate_a_viewer_could_open_is_refused_on_the_step(team):
    body = payload(team.project, definition=definition(*definition()["steps"], VIEWER_GATE))
    assert assert_error(team.client("developer").post(LIST_URL, body), 400)["errors"] == GATE_ERRORS
    assert not Workflow.objects.exists()


def test_patching_in_a_gate_a_viewer_could_open_is_refused_and_adds_no_version(team, workflow):
    before = state(workflow)
    new = definition(*definition()["steps"], VIEWER_GATE)
    response = team.client("owner").patch(detail_url(workflow), {"definition": new})
    assert assert_error(response, 400)["errors"] == GATE_ERRORS
    assert state(workflow) == before


def test_validate_flags_a_gate_a_viewer_could_open(team):
    gated = definition(*definition()["steps"], VIEWER_GATE)
    body = {"project": str(team.project.pk), "definition": gated, "input_schema": INPUT_SCHEMA}
    assert assert_error(team.client("developer").post(VALIDATE_URL, body), 400)["errors"] == GATE_ERRORS


def test_a_gate_may_name_the_developer_role(team):
    gate = VIEWER_GATE | {"role": "developer"}
    body = payload(team.project, definition=definition(*definition()["steps"], gate))
    assert team.client("developer").post(LIST_URL, body).status_code == 201
