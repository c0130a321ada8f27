"""What a step reads of its project's catalog — the agent, its tools, the project's call-level
policies and concurrency limits, and the model prices — kept per worker process, keyed by the project's catalog
generation (runs.CatalogGeneration, which database triggers move on every change of any of
them). The generation comes with the row the claim or the advance reads anyway, so a step of a
project whose catalog did not change reads none of it again: four statements fewer per step.

Fresh as before: a step sees every change committed before its claim read the generation (today's
reads came a few milliseconds later, after the claim: the same race with a change committing in
between). Entries are read lazily under the generation they were asked for, in a later snapshot,
so an entry is never older than its generation; a newer generation starts an empty catalog.
Objects handed out are the cache's: callers copy before they change one (agent.run does)."""

import copy
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import OuterRef, Subquery
from django.utils import timezone

from agents.models import Agent, ModelPrice, Tool
from policies import admission as policy_admission
from policies import services as policy_services

from ..models import CatalogGeneration

MAX_PROJECTS = 256


def generation_of(project_ref: str = "project_id") -> Subquery:
    """The catalog generation of the project a row names (``project_ref``), for an annotation:
    read with that row, in the same statement."""
    return Subquery(CatalogGeneration.objects.filter(project_id=OuterRef(project_ref)).values("number")[:1])


@dataclass
class Catalog:
    generation: int | None
    agents: dict[str, Agent | None] = field(default_factory=dict)
    tools: dict[int, list[Tool]] = field(default_factory=dict)
    policies: list | None = None
    slots: list | None = None
    prices: dict[tuple[str, str], list[ModelPrice]] = field(default_factory=dict)

    def agent(self, project_id, slug: str) -> Agent | None:
        """The project's agent (with its credential), a copy the caller may change."""
        if slug not in self.agents:
            self.agents[slug] = (
                Agent.objects.select_related("credential").filter(project_id=project_id, slug=slug).first()
            )
        found = self.agents[slug]
        return copy.copy(found) if found is not None else None

    def tools_of(self, agent: Agent) -> list[Tool]:
        """The agent's tools, with their credentials."""
        if agent.pk not in self.tools:
            self.tools[agent.pk] = list(agent.tools.select_related("credential").order_by())
        return self.tools[agent.pk]

    def call_policies(self, project_id) -> list:
        """The policies a step's calls are judged by (policies.services.policies_before_calls)."""
        if self.policies is None:
            self.policies = policy_services.policies_before_calls(project_id)
        return list(self.policies)

    def slot_policies(self, project_id) -> list:
        """The concurrency limits a queued run waits on (policies.admission.slot_policies)."""
        if self.slots is None:
            self.slots = policy_admission.slot_policies(project_id)
        return list(self.slots)

    def price(self, provider: str, model: str, at: datetime | None = None) -> ModelPrice | None:
        """The price in force at ``at`` (default now), as agents.selectors.price_in_force: every row
        of the model is kept, so a price that takes effect later needs no write to apply."""
        key = (provider, model)
        if key not in self.prices:
            rows = ModelPrice.objects.filter(provider=provider, model=model).order_by("-effective_from")
            self.prices[key] = list(rows)
        at = at or timezone.now()
        return next((row for row in self.prices[key] if row.effective_from <= at), None)


_catalogs: "OrderedDict[object, Catalog]" = OrderedDict()


def of(project_id, generation: int | None) -> Catalog:
    """The project's catalog at ``generation`` (as read with the run), from this process's cache."""
    catalog = _catalogs.get(project_id)
    if catalog is None or catalog.generation != generation or generation is None:
        catalog = Catalog(generation)
        _catalogs[project_id] = catalog
        while len(_catalogs) > MAX_PROJECTS:
            _catalogs.popitem(last=False)
    _catalogs.move_to_end(project_id)
    return catalog
