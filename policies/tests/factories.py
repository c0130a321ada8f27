"""Factories for policies and the spend ledger. A bare ``PolicyFactory()`` is a valid $10/day
budget (UTC) that blocks; pass ``kind``, ``config`` and ``action`` for the others."""

from decimal import Decimal

import factory
from django.utils import timezone

from policies.choices import EntryStatus, Outcome, PolicyAction, PolicyKind, Stage, Window
from policies.models import Policy, PolicyDecision, SpendEntry
from projects.tests.factories import ProjectFactory


class PolicyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Policy

    project = factory.SubFactory(ProjectFactory)
    name = factory.Sequence(lambda n: f"Policy {n}")
    kind = PolicyKind.BUDGET
    config = factory.LazyFunction(lambda: {"amount_usd": 10, "window": Window.DAY, "timezone": "UTC"})
    action = PolicyAction.BLOCK


class SpendEntryFactory(factory.django.DjangoModelFactory):
    """A settled echo-1 call costing $0.01; pass ``status=EntryStatus.RESERVED`` and
    ``reserved_usd`` (and ``cost_usd=None``) for one still in flight."""

    class Meta:
        model = SpendEntry

    project = factory.SubFactory(ProjectFactory)
    provider = "echo"
    model = "echo-1"
    status = EntryStatus.SETTLED
    cost_usd = Decimal("0.01")
    created_at = factory.LazyFunction(timezone.now)
    settled_at = factory.LazyAttribute(lambda entry: entry.created_at if entry.status == EntryStatus.SETTLED else None)


class PolicyDecisionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PolicyDecision

    policy = factory.SubFactory(PolicyFactory)
    project = factory.LazyAttribute(lambda decision: decision.policy.project if decision.policy else None)
    stage = Stage.CALL
    outcome = Outcome.BLOCKED
    reason = factory.LazyAttribute(
        lambda decision: f"Blocked by {decision.policy.name!r}." if decision.policy else "Blocked by a tool's own rule."
    )
