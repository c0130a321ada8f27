"""The webhooks admin: a new endpoint's secret is shown once, the admin form runs the API's
checks, deliveries are filtered and redelivered through the service."""

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from accounts.tests.factories import UserFactory
from notices.choices import NoticeType
from notices.services import publish
from projects.tests.factories import ProjectFactory
from sparkops.lib import crypto
from webhooks.choices import DeliveryStatus
from webhooks.models import Delivery, Endpoint

from .support import make_endpoint

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client() -> Client:
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_adding_an_endpoint_shows_its_secret_once_and_stores_it_encrypted(admin_client):
    project = ProjectFactory()
    form = {"project": str(project.pk), "kind": "webhook", "url": "https://hooks.example.com/a", "event_types": "[]"}

    response = admin_client.post("/admin/webhooks/endpoint/add/", {**form, "enabled": "on"})

    assert response.status_code == 302, response.content.decode()[:2000]
    endpoint = Endpoint.objects.get()
    shown = [str(m) for m in get_messages(response.wsgi_request) if "Signing secret" in str(m)]
    assert len(shown) == 1
    assert shown[0].endswith(crypto.decrypt(endpoint.secret_encrypted))


def test_the_admin_form_refuses_what_the_api_refuses(admin_client):
    project = ProjectFactory()
    form = {"project": str(project.pk), "kind": "email", "url": "", "email_to": "", "event_types": '["run.exploded"]'}

    response = admin_client.post("/admin/webhooks/endpoint/add/", form)

    assert response.status_code == 200
    assert "An email endpoint needs at least one address" in response.content.decode()
    assert "Unknown event types" in response.content.decode()
    assert Endpoint.objects.count() == 0


def test_deliveries_filter_by_status_and_the_redeliver_action_resets_them(admin_client):
    project = ProjectFactory()
    make_endpoint(project, "https://hooks.example.com/a")
    publish(project.pk, NoticeType.RUN_FAILED, payload={})
    publish(project.pk, NoticeType.RUN_SUCCEEDED, payload={})
    failed = Delivery.objects.get(event_type=NoticeType.RUN_FAILED)
    Delivery.objects.filter(pk=failed.pk).update(status=DeliveryStatus.FAILED, attempts=8, next_attempt_at=None)

    listed = admin_client.get("/admin/webhooks/delivery/?status__exact=failed")
    assert listed.status_code == 200
    assert str(failed.pk) in listed.content.decode()
    assert listed.context["cl"].result_count == 1

    response = admin_client.post(
        "/admin/webhooks/delivery/", {"action": "redeliver", "_selected_action": [str(failed.pk)]}
    )

    assert response.status_code == 302
    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == (DeliveryStatus.PENDING, 0)
    assert admin_client.get(f"/admin/webhooks/delivery/{failed.pk}/change/").status_code == 200
