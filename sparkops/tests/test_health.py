import pytest

from sparkops import __version__
from sparkops.celery import app as celery_app


def test_liveness_answers_without_the_database(client):
    # No django_db mark: any query here would raise.
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "app": "Spark-Ops Control Plane", "version": __version__}


@pytest.mark.django_db
def test_readiness_checks_the_database_and_the_broker(client):
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "broker": "ok"}


@pytest.fixture
def broker_down():
    # A real connection attempt to a port nothing listens on.
    saved = celery_app.conf.broker_url, celery_app.conf.broker_transport
    celery_app.conf.broker_url, celery_app.conf.broker_transport = "redis://127.0.0.1:1/0", None
    yield
    celery_app.conf.broker_url, celery_app.conf.broker_transport = saved


@pytest.mark.django_db
def test_readiness_answers_503_naming_the_broker_when_it_is_down(client, broker_down):
    response = client.get("/health/ready/")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert body["checks"] == {"database": "ok", "broker": "down"}
    # Which dependency is down, never how: the driver's text names hosts and ports.
    assert "errors" not in body
    assert "127.0.0.1" not in response.content.decode()
