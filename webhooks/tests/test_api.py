"""/api/v1/webhooks and /api/v1/webhook-deliveries: the secret shown once, field-level errors,
test messages, rotation, the delivery log and redeliver; admins and owners only."""

from datetime import timedelta

import pytest
from django.utils import timezone

from notices.choices import NoticeType
from notices.services import publish
from sparkops.roles import Role
from webhooks.choices import DeliveryStatus
from webhooks.models import Delivery, Endpoint

from .support import Receiver, make_endpoint

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver(settings):
    settings.SPARKOPS_HTTP_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    server = Receiver()
    yield server
    server.stop()


def body(team, **fields) -> dict:
    return {"project": str(team.project.pk), "url": "https://hooks.example.com/a", **fields}


def test_the_secret_is_in_the_create_answer_only_and_signs_the_test_message(team, receiver):
    client = team.client(Role.ADMIN)
    created = client.post("/api/v1/webhooks", body(team, url=receiver.url, event_types=["run.failed"]), format="json")

    assert created.status_code == 201, created.content
    secret = created.json()["secret"]
    assert secret.startswith("whsec_")
    endpoint_id = created.json()["id"]
    assert "secret" not in client.get(f"/api/v1/webhooks/{endpoint_id}").json()
    assert Endpoint.objects.get(pk=endpoint_id).event_types == ["run.failed"]

    tested = client.post(f"/api/v1/webhooks/{endpoint_id}/test")
    assert tested.status_code == 201, tested.content
    assert (tested.json()["status"], tested.json()["attempt_log"][0]["status_code"]) == ("succeeded", 200)
    assert receiver.received[0].verify(secret)["type"] == "webhook.test"
    assert receiver.received[0].headers["webhook-id"] == tested.json()["id"]


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"url": ""}, "url", "A webhook endpoint needs a URL"),
        ({"kind": "email", "url": ""}, "email_to", "An email endpoint needs at least one address"),
        ({"kind": "email", "url": "", "email_to": "ops@, x@example.com"}, "email_to", "'ops@' is not an email"),
        ({"event_types": ["run.exploded"]}, "event_types", "not a valid choice"),
        ({"url": "ftp://example.com/a"}, "url", "Only http and https URLs."),
        ({"kind": "pager"}, "kind", "not a valid choice"),
    ],
)
def test_bad_input_answers_400_on_the_field(team, fields, field, message):
    response = team.client(Role.ADMIN).post("/api/v1/webhooks", body(team, **fields), format="json")

    assert response.status_code == 400, response.content
    assert message in str(response.json()["errors"][field])
    assert Endpoint.objects.count() == 0


def test_rotating_returns_the_new_secret_once_and_keeps_the_old_for_the_overlap(team):
    endpoint, old = make_endpoint(team.project, "https://hooks.example.com/a")
    client = team.client(Role.OWNER)

    response = client.post(f"/api/v1/webhooks/{endpoint.pk}/rotate-secret", {"overlap_hours": 2}, format="json")

    assert response.status_code == 200, response.content
    endpoint.refresh_from_db()
    assert response.json()["secret"] not in (old, "")
    expires = endpoint.previous_secret_expires_at
    assert timedelta(hours=1, minutes=59) < expires - timezone.now() <= timedelta(hours=2)
    too_long = client.post(f"/api/v1/webhooks/{endpoint.pk}/rotate-secret", {"overlap_hours": 500}, format="json")
    assert too_long.status_code == 400
    assert "overlap_hours" in too_long.json()["errors"]


def test_the_delivery_log_lists_by_endpoint_and_status_and_redelivers(team):
    endpoint, _ = make_endpoint(team.project, "https://hooks.example.com/a")
    other, _ = make_endpoint(team.project, "https://hooks.example.com/b", event_types=[NoticeType.RUN_SUCCEEDED])
    publish(team.project.pk, NoticeType.RUN_FAILED, payload={})
    delivery = Delivery.objects.get()
    Delivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.FAILED, next_attempt_at=None, attempts=8)
    client = team.client(Role.ADMIN)

    assert [d["id"] for d in client.get(f"/api/v1/webhooks/{endpoint.pk}/deliveries").json()["results"]] == [
        str(delivery.pk)
    ]
    assert client.get(f"/api/v1/webhooks/{other.pk}/deliveries").json()["results"] == []
    listed = client.get(f"/api/v1/webhook-deliveries?endpoint={endpoint.pk}&status=failed").json()["results"]
    assert [d["id"] for d in listed] == [str(delivery.pk)]

    response = client.post(f"/api/v1/webhook-deliveries/{delivery.pk}/redeliver")
    assert response.status_code == 202, response.content
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.PENDING, 0)


def test_redelivering_to_a_disabled_endpoint_answers_409(team):
    endpoint, _ = make_endpoint(team.project, "https://hooks.example.com/a")
    publish(team.project.pk, NoticeType.RUN_FAILED, payload={})
    Endpoint.objects.filter(pk=endpoint.pk).update(enabled=False, disabled_reason="Disabled after 20 failed attempts")

    response = team.client(Role.ADMIN).post(f"/api/v1/webhook-deliveries/{Delivery.objects.get().pk}/redeliver")

    assert response.status_code == 409, response.content


def test_developers_do_not_see_endpoints_and_outsiders_do_not_find_them(team):
    endpoint, _ = make_endpoint(team.project, "https://hooks.example.com/a")

    assert team.client(Role.DEVELOPER).get(f"/api/v1/webhooks/{endpoint.pk}").status_code == 403
    assert team.client(Role.DEVELOPER).get("/api/v1/webhooks").json()["results"] == []
    assert team.client("outsider").get(f"/api/v1/webhooks/{endpoint.pk}").status_code == 404
    assert team.client(Role.DEVELOPER).get("/api/v1/webhook-deliveries").json()["results"] == []
    assert [e["id"] for e in team.client(Role.ADMIN).get("/api/v1/webhooks").json()["results"]] == [str(endpoint.pk)]
