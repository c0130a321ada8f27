"""Reads of the agents catalog that other apps (workflows, runs) rely on."""

from decimal import Decimal

from django.db.models import OuterRef, QuerySet, Subquery
from django.utils import timezone

from .models import Agent, ModelPrice, Tool


def catalog_for_project(project_id) -> dict[str, dict[str, bool]]:
    """Slugs of the project's agents and tools, each with whether it may be used now:
    ``{"agents": {"researcher": True}, "tools": {"search": False}}``."""
    agents = dict(Agent.objects.filter(project_id=project_id).values_list("slug", "status"))
    tools = dict(Tool.objects.filter(project_id=project_id).values_list("slug", "enabled"))
    return {
        "agents": {slug: status == "active" for slug, status in agents.items()},
        "tools": {slug: bool(enabled) for slug, enabled in tools.items()},
    }


def price_in_force(*, provider: str, model: str, at=None) -> ModelPrice | None:
    """The price row for a call made at ``at`` (default now), or None when the model is unpriced."""
    at = at or timezone.now()
    return (
        ModelPrice.objects.filter(provider=provider, model=model, effective_from__lte=at)
        .order_by("-effective_from")
        .first()
    )


def cost_of_call(
    *, provider: str, model: str, input_tokens: int, output_tokens: int, at=None
) -> tuple[Decimal | None, ModelPrice | None]:
    """(cost in USD, the price used), or (None, None) for an unpriced model: never a silent $0."""
    price = price_in_force(provider=provider, model=model, at=at)
    if price is None:
        return None, None
    return price.cost(input_tokens, output_tokens), price


def current_prices() -> QuerySet[ModelPrice]:
    """One row per (provider, model): the one in force now."""
    newest = (
        ModelPrice.objects.filter(
            provider=OuterRef("provider"), model=OuterRef("model"), effective_from__lte=timezone.now()
        )
        .order_by("-effective_from")
        .values("pk")[:1]
    )
    return ModelPrice.objects.filter(pk=Subquery(newest)).order_by("provider", "model")
