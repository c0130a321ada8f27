"""/api/v1/model-prices and the price selectors: seeded prices, the price in force, call costs."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from accounts.tests.factories import ApiKeyFactory, UserFactory
from agents import selectors
from agents.models import ModelPrice
from sparkops.roles import Role
from sparkops.testing import client_for

from .factories import ModelPriceFactory

LIST_URL = "/api/v1/model-prices"
SEEDED_FROM = datetime(2025, 1, 1, tzinfo=UTC)


def days(n: int):
    return timezone.now() + timezone.timedelta(days=n)


def rows(response) -> list[tuple]:
    assert response.status_code == 200, response.json()
    return [(r["provider"], r["model"], r["input_usd_per_mtok"]) for r in response.json()["results"]]


@pytest.fixture
def mini_prices(db):
    """gpt-4o-mini: the seeded 2025 price, an older one, a newer one in force and a future one."""
    older = ModelPriceFactory(model="gpt-4o-mini", effective_from=datetime(2024, 1, 1, tzinfo=UTC))
    newer = ModelPriceFactory(model="gpt-4o-mini", effective_from=days(-1), input_usd_per_mtok=Decimal("0.12"))
    future = ModelPriceFactory(model="gpt-4o-mini", effective_from=days(30), input_usd_per_mtok=Decimal("0.01"))
    return older, newer, future


# ------------------------------------------------------------------------------
# Access
# ------------------------------------------------------------------------------
def test_any_authenticated_user_reads_prices(team):
    for client in (team.client("viewer"), team.client("outsider"), client_for(UserFactory())):
        response = client.get(LIST_URL)
        assert response.status_code == 200
        assert response.json()["count"] == ModelPrice.objects.count()


def test_an_api_key_reads_prices(team):
    key = ApiKeyFactory(project=team.project, created_by=team.members[Role.VIEWER], role=Role.VIEWER)
    assert client_for(api_key=key.raw).get(LIST_URL).status_code == 200


def test_unauthenticated_callers_are_refused(api_client, db):
    response = api_client.get(LIST_URL)
    assert response.status_code == 401
    assert response.json()["status"] == 401


def test_prices_are_read_only_through_the_api(team):
    price = ModelPrice.objects.get(provider="echo", model="echo-1")
    client = team.client("owner")
    new = {"provider": "openai", "model": "new", "input_usd_per_mtok": "1", "output_usd_per_mtok": "1"}

    assert client.post(LIST_URL, new | {"effective_from": "2030-01-01T00:00:00Z"}).status_code == 405
    assert client.patch(f"{LIST_URL}/{price.pk}", {"input_usd_per_mtok": "0"}).status_code == 405
    assert client.delete(f"{LIST_URL}/{price.pk}").status_code == 405
    assert not ModelPrice.objects.filter(model="new").exists()
    assert ModelPrice.objects.get(pk=price.pk).input_usd_per_mtok == Decimal("1.00")


def test_a_price_is_read_by_id(team):
    price = ModelPrice.objects.get(provider="openai", model="gpt-4o-mini")
    body = team.client("viewer").get(f"{LIST_URL}/{price.pk}").json()
    assert body == {
        "id": price.pk,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_usd_per_mtok": "0.150000",
        "output_usd_per_mtok": "0.600000",
        "effective_from": "2025-01-01T00:00:00Z",
    }


# ------------------------------------------------------------------------------
# Seeded prices and the price in force
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("provider", "model", "input_price", "output_price"),
    [
        ("echo", "echo-1", "1.00", "2.00"),
        ("openai", "gpt-4o-mini", "0.15", "0.60"),
        ("anthropic", "claude-sonnet-4-5", "3.00", "15.00"),
    ],
)
def test_the_migration_seeds_list_prices(db, provider, model, input_price, output_price):
    price = ModelPrice.objects.get(provider=provider, model=model)
    assert (price.input_usd_per_mtok, price.output_usd_per_mtok) == (Decimal(input_price), Decimal(output_price))
    assert price.effective_from == SEEDED_FROM


def test_current_shows_one_row_per_model_the_newest_in_force(team, mini_prices):
    _, newer, _ = mini_prices
    ModelPriceFactory(model="not-yet-priced", effective_from=days(10))
    response = team.client("viewer").get(LIST_URL, {"current": "true"})

    listed = rows(response)
    models = [(provider, model) for provider, model, _ in listed]
    started = ModelPrice.objects.filter(effective_from__lte=timezone.now())
    assert len(models) == len(set(models)) == started.order_by().values("provider", "model").distinct().count()
    assert ("openai", "gpt-4o-mini", "0.120000") in listed
    assert ("openai", "not-yet-priced") not in models
    mini = [r for r in response.json()["results"] if r["model"] == "gpt-4o-mini"]
    assert [r["id"] for r in mini] == [newer.pk]


def test_current_false_lists_every_price(team, mini_prices):
    response = team.client("viewer").get(LIST_URL, {"current": "false", "model": "gpt-4o-mini"})
    assert len(rows(response)) == 4


def test_price_in_force_ignores_future_prices_and_picks_the_newest_started(mini_prices):
    older, newer, future = mini_prices
    assert selectors.price_in_force(provider="openai", model="gpt-4o-mini") == newer
    assert selectors.price_in_force(provider="openai", model="gpt-4o-mini", at=days(31)) == future
    assert selectors.price_in_force(provider="openai", model="gpt-4o-mini", at=datetime(2024, 6, 1, tzinfo=UTC)) == (
        older
    )
    assert selectors.price_in_force(provider="openai", model="gpt-4o-mini", at=datetime(2023, 1, 1, tzinfo=UTC)) is None


# ------------------------------------------------------------------------------
# cost_of_call
# ------------------------------------------------------------------------------
def cost(at=None, *, model="gpt-4o-mini"):
    return selectors.cost_of_call(provider="openai", model=model, input_tokens=1_000_000, output_tokens=500_000, at=at)


def test_cost_of_call_uses_the_price_in_force_at_the_given_time(mini_prices):
    older, newer, _ = mini_prices
    seeded = ModelPrice.objects.get(model="gpt-4o-mini", effective_from=SEEDED_FROM)

    assert cost(datetime(2025, 6, 1, tzinfo=UTC)) == (Decimal("0.45"), seeded)  # 0.15 + 0.5 * 0.60
    assert cost(datetime(2024, 6, 1, tzinfo=UTC)) == (Decimal("2.00"), older)  # 1.00 + 0.5 * 2.00
    assert cost() == (Decimal("1.12"), newer)  # 0.12 + 0.5 * 2.00


def test_cost_of_call_defaults_to_the_price_in_force_now(mini_prices):
    with time_machine.travel(datetime(2025, 3, 1, tzinfo=UTC), tick=False):
        amount, price = cost()
    assert (amount, price.effective_from) == (Decimal("0.45"), SEEDED_FROM)


def test_cost_of_call_is_none_for_an_unpriced_model_never_zero(db):
    assert cost(model="gpt-unknown") == (None, None)
    assert cost(datetime(2020, 1, 1, tzinfo=UTC)) == (None, None)


def test_a_price_costs_tokens_per_million():
    price = ModelPrice(input_usd_per_mtok=Decimal("3"), output_usd_per_mtok=Decimal("15"))
    assert price.cost(1_000, 2_000) == Decimal("0.033")
    assert price.cost(0, 0) == Decimal(0)
