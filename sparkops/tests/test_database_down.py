"""The database goes away: the API answers 503 in the error shape, the readiness probe names the
database without the driver's text. The outage is real: the test's connection is pointed at a
port nothing listens on, as if PostgreSQL were down. PostgreSQL only (an in-memory SQLite test
database cannot be "down" without being lost)."""

import socket

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from sparkops.testing import make_team

pytestmark = pytest.mark.skipif(
    not settings.DATABASE_URL.startswith("postgres"), reason="needs PostgreSQL (set DATABASE_URL)"
)

ERROR_KEYS = {"status", "code", "message", "errors"}


def closed_port() -> int:
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def take_database_down(transactional_db):
    """Call it to have every new connection refused until the test ends (it returns the port
    tried); then the real database comes back."""
    saved = dict(connection.settings_dict)

    def down() -> str:
        connection.close()
        connection.settings_dict.update(HOST="127.0.0.1", PORT=str(closed_port()))
        return connection.settings_dict["PORT"]

    yield down
    connection.close()
    connection.settings_dict.update(saved)


@pytest.fixture
def database_down(take_database_down):
    return take_database_down()


def test_an_api_call_answers_503_in_the_error_shape_when_the_database_is_down(take_database_down):
    client = make_team().client("developer")
    port = take_database_down()

    response = client.get("/api/v1/projects")

    assert response.status_code == 503
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert body["code"] == "database_unavailable"
    assert response["Retry-After"] == "5"
    assert port not in response.content.decode()


def test_a_page_outside_the_api_answers_503_when_the_database_is_down(database_down):
    client = Client(raise_request_exception=False)
    client.cookies["sessionid"] = "a-session-the-database-must-be-asked-about"

    response = client.get("/admin/")

    assert response.status_code == 503
    assert response["Retry-After"] == "5"


def test_readiness_names_the_database_without_the_drivers_text(database_down):
    response = Client().get("/health/ready")

    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"] == "down"
    assert "errors" not in body
    assert database_down not in response.content.decode()
    assert "127.0.0.1" not in response.content.decode()
