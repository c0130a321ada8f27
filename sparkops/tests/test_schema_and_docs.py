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
