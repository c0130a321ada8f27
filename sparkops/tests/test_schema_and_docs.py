import json
import re

import pytest
from django.core.management import call_command


def test_the_schema_generates_without_warnings(tmp_path):
    out = tmp_path / "schema.json"
    call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", "--file", str(out))
    schema = json.loads(out.read_text())
    paths = schema["paths"]
    for path in [
        "/api/v1/projects/",
        "/api/v1/projects/{id}/",
        "/api/v1/memberships/",
        "/api/v1/api-keys/",
        "/api/v1/auth/login/",
        "/api/v1/auth/refresh/",
        "/api/v1/auth/me/",
    ]:
        assert path in paths


def test_every_operation_documents_its_errors_in_the_shared_shape(tmp_path):
    out = tmp_path / "schema.json"
    call_command("spectacular", "--format", "openapi-json", "--file", str(out))
    schema = json.loads(out.read_text())
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            errors = {code: r for code, r in operation["responses"].items() if code[0] in "45"}
            assert errors, f"{method.upper()} {path} documents no error status"
            for response in errors.values():
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
            if "{" in path:
                assert "404" in errors


def test_openapi_json_is_served(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_nothing_from_outside(client, page):
    response = client.get(page)
    assert response.status_code == 200
    html = response.content.decode()
    assert "googleapis" not in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets, "the page should load its assets"
    assert all(url.startswith("/static/") for url in assets), assets
    for url in assets:
        assert client.get(url).status_code == 200, url


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    out = tmp_path_factory.mktemp("schema") / "schema.json"
    call_command("spectacular", "--format", "openapi-json", "--file", str(out))
    return json.loads(out.read_text())


def test_relations_that_can_be_empty_are_nullable(schema):
    # A tool step has no agent, an agent step no tool, and run-level events no step: the API
    # answers null there, so a client generated from the schema must accept it.
    components = schema["components"]["schemas"]
    assert components["RunStep"]["properties"]["agent"]["nullable"] is True
    assert components["RunStep"]["properties"]["tool"]["nullable"] is True
    assert components["RunEvent"]["properties"]["step"]["nullable"] is True


def _responses(schema, path, method):
    return set(schema["paths"][path][method]["responses"])


def test_lists_document_the_errors_their_query_can_cause(schema):
    # ?project=<unknown> and a page past the end are 404; a filter of the wrong type is 400.
    assert {"400", "404"} <= _responses(schema, "/api/v1/agents/", "get")
    assert {"400", "404"} <= _responses(schema, "/api/v1/metrics/", "get")


def test_deletes_document_their_refusals(schema):
    # The last owner cannot leave; a workflow with runs cannot be deleted.
    assert {"400", "409"} <= _responses(schema, "/api/v1/memberships/{id}/", "delete")
    assert {"400", "409"} <= _responses(schema, "/api/v1/workflows/{id}/", "delete")


def test_throttled_views_document_429(schema):
    assert "429" in _responses(schema, "/api/v1/auth/register/", "post")
    assert "429" not in _responses(schema, "/api/v1/projects/", "post")


def test_json_documents_in_requests_are_objects(schema):
    # The API refuses null and non-objects for configs, definitions and inputs.
    components = schema["components"]["schemas"]
    assert components["PolicyRequest"]["properties"]["config"]["type"] == "object"
    assert components["ToolTestRequestRequest"]["properties"]["input"]["type"] == "object"
    assert components["PatchedAgentRequest"]["properties"]["parameters"]["type"] == "object"


def test_query_numbers_declare_the_range_the_api_accepts(schema):
    preview = schema["paths"]["/api/v1/schedules/{id}/preview/"]["get"]["parameters"]
    assert next(p for p in preview if p["name"] == "n")["schema"] == {"type": "integer", "minimum": 1, "maximum": 100}
    diff = schema["paths"]["/api/v1/workflows/{id}/diff/"]["get"]["parameters"]
    assert {p["name"]: p["schema"].get("minimum") for p in diff if p["in"] == "query"} == {"from": 1, "to": 1}


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/api/v1/runs/", "post"),
        ("/api/v1/runs/{id}/retry/", "post"),
        ("/api/v1/workflows/{id}/run/", "post"),
        ("/api/v1/agents/{id}/start-task/", "post"),
    ],
)
def test_every_way_to_start_a_run_documents_policy_refusals(schema, path, method):
    responses = schema["paths"][path][method]["responses"]
    assert {"422", "429"} <= set(responses)
    assert responses["429"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
