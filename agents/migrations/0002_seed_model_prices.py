"""List prices (USD per million tokens) of common models, as published by the providers when
this was written. Prices change: add a row with a later effective_from in the admin; costs are
always computed with the row in force at call time. The echo provider's price is a demo price,
so offline demos show costs and budgets at work."""

from datetime import UTC, datetime
from decimal import Decimal

from django.db import migrations

EFFECTIVE_FROM = datetime(2025, 1, 1, tzinfo=UTC)
PRICES = [
    ("openai", "gpt-5", "1.25", "10.00"),
    ("openai", "gpt-5-mini", "0.25", "2.00"),
    ("openai", "gpt-5-nano", "0.05", "0.40"),
    ("openai", "gpt-4.1", "2.00", "8.00"),
    ("openai", "gpt-4.1-mini", "0.40", "1.60"),
    ("openai", "gpt-4.1-nano", "0.10", "0.40"),
    ("openai", "gpt-4o", "2.50", "10.00"),
    ("openai", "gpt-4o-mini", "0.15", "0.60"),
    ("openai", "o3", "2.00", "8.00"),
    ("openai", "o4-mini", "1.10", "4.40"),
    ("anthropic", "claude-opus-4-1", "15.00", "75.00"),
    ("anthropic", "claude-sonnet-4-5", "3.00", "15.00"),
    ("anthropic", "claude-sonnet-4-0", "3.00", "15.00"),
    ("anthropic", "claude-haiku-4-5", "1.00", "5.00"),
    ("anthropic", "claude-3-5-haiku-latest", "0.80", "4.00"),
    ("echo", "echo-1", "1.00", "2.00"),
]


def seed(apps, schema_editor):
    ModelPrice = apps.get_model("agents", "ModelPrice")
    for provider, model, input_price, output_price in PRICES:
        ModelPrice.objects.get_or_create(
            provider=provider,
            model=model,
            effective_from=EFFECTIVE_FROM,
            defaults={"input_usd_per_mtok": Decimal(input_price), "output_usd_per_mtok": Decimal(output_price)},
        )


def unseed(apps, schema_editor):
    ModelPrice = apps.get_model("agents", "ModelPrice")
    for provider, model, _, _ in PRICES:
        ModelPrice.objects.filter(provider=provider, model=model, effective_from=EFFECTIVE_FROM).delete()


class Migration(migrations.Migration):
    dependencies = [("agents", "0001_initial")]

    operations = [migrations.RunPython(seed, unseed)]
