"""Reads of policies and the spend ledger: which policies apply, what a budget has spent."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fnmatch import fnmatchcase

from django.db import connection
from django.db.models import Case, DecimalField, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from .choices import EntryStatus, PolicyKind, Window
from .models import ZERO, Policy, SpendEntry
from .money import config_usd, ledger_usd
from .windows import Span, window_at

_MONEY = DecimalField(max_digits=14, decimal_places=6)
# What an entry takes from a budget: its actual cost once settled, its estimate until then.
COUNTED = Case(
    When(status=EntryStatus.SETTLED, then=Coalesce("cost_usd", Value(ZERO), output_field=_MONEY)),
    default="reserved_usd",
    output_field=_MONEY,
)


def policies_for(project_id, kinds) -> list[Policy]:
    """Enabled policies of these kinds for a project, global ones included, first checked first."""
    return list(Policy.objects.filter(Q(project_id=project_id) | Q(project__isnull=True), kind__in=kinds, enabled=True))


def model_matches(pattern: str, provider: str, model: str) -> bool:
    """``openai/gpt-4o``, ``openai/*``, ``gpt-4o*`` (any provider) all name models."""
    if "/" in pattern:
        return fnmatchcase(f"{provider}/{model}", pattern)
    return fnmatchcase(model, pattern)


def budget_covers(
    config: dict, *, agent_slug: str = "", provider: str = "", model: str = "", workflow_slug: str = ""
) -> bool:
    """Whether a call by this agent, model and workflow counts against the budget."""
    if config.get("agent") and config["agent"] != agent_slug:
        return False
    if config.get("model") and not model_matches(config["model"], provider, model):
        return False
    return not (config.get("workflow") and config["workflow"] != workflow_slug)


def _budget_entries(policy: Policy, project_id, span: Span) -> QuerySet[SpendEntry]:
    entries = SpendEntry.objects.filter(project_id=project_id, created_at__gte=span.start, created_at__lt=span.end)
    config = policy.config
    if config.get("agent"):
        entries = entries.filter(agent_slug=config["agent"])
    if config.get("workflow"):
        entries = entries.filter(workflow_slug=config["workflow"])
    if pattern := config.get("model"):
        entries = entries.filter(_models_matching(entries, pattern))
    return entries


def _models_matching(entries: QuerySet[SpendEntry], pattern: str) -> Q:
    """Patterns are globs, which SQL LIKE cannot express exactly: match the (few) distinct
    provider/model pairs in Python and filter on those."""
    query = Q(pk__in=[])
    for provider, model in entries.order_by().values_list("provider", "model").distinct():
        if model_matches(pattern, provider, model):
            query |= Q(provider=provider, model=model)
    return query


@dataclass
class BudgetUse:
    spent: Decimal  # settled calls
    reserved: Decimal  # calls in flight (and reservations a lost worker left)

    @property
    def total(self) -> Decimal:
        return self.spent + self.reserved


def budget_use(policy: Policy, project_id, span: Span) -> BudgetUse:
    sums = _budget_entries(policy, project_id, span).aggregate(
        spent=Sum("cost_usd", filter=Q(status=EntryStatus.SETTLED)),
        reserved=Sum("reserved_usd", filter=~Q(status=EntryStatus.SETTLED)),
    )
    return BudgetUse(sums["spent"] or ZERO, sums["reserved"] or ZERO)


def run_use(run_id) -> tuple[Decimal, int]:
    """(USD, tokens) a run has spent or holds in reservations: COUNTED, summed by a plain
    statement, for it is read before every call under a run ceiling."""
    run = SpendEntry._meta.get_field("run").get_db_prep_value(run_id, connection)
    with connection.cursor() as cursor:
        cursor.execute(_RUN_USE, [EntryStatus.SETTLED, run])
        usd, tokens = cursor.fetchone()
    return ledger_usd(usd), int(tokens or 0)


_RUN_USE = (
    "SELECT SUM(CASE WHEN status = %s THEN COALESCE(cost_usd, 0) ELSE reserved_usd END),"
    " SUM(input_tokens + output_tokens) FROM policies_spendentry WHERE run_id = %s"
)


@dataclass
class BudgetStatus:
    policy: Policy
    project_id: object
    amount: Decimal
    spent: Decimal
    reserved: Decimal
    window_start: datetime
    window_end: datetime
    projected: Decimal

    @property
    def remaining(self) -> Decimal:
        return max(self.amount - self.spent - self.reserved, ZERO)

    @property
    def exhausted(self) -> bool:
        return self.spent + self.reserved >= self.amount


def budget_status(policy: Policy, project_id, now: datetime | None = None) -> BudgetStatus:
    """Spent, reserved and remaining in the window holding ``now``, and the spend projected to the
    window's end at the rate so far. A rolling window always ends now, so its projection is the
    spend of a whole window at the current rate: what it has spent."""
    now = now or timezone.now()
    span = window_at(policy.config, now)
    return budget_status_from(policy, project_id, span, budget_use(policy, project_id, span), now)


def budget_status_from(policy: Policy, project_id, span: Span, use: BudgetUse, now: datetime) -> BudgetStatus:
    """budget_status, from the window and use already read (see budget_status)."""
    projected = use.spent
    if policy.config["window"] != Window.ROLLING:
        elapsed = (now - span.start).total_seconds()
        if elapsed > 0:
            rate = use.spent / Decimal(elapsed)
            projected = use.spent + rate * Decimal((span.end - now).total_seconds())
    return BudgetStatus(
        policy=policy,
        project_id=project_id,
        amount=config_usd(policy.config, "amount_usd"),
        spent=use.spent,
        reserved=use.reserved,
        window_start=span.start,
        window_end=span.end,
        projected=projected.quantize(Decimal("0.000001")),
    )


def budgets_of(project_ids) -> list[BudgetStatus]:
    """The status of every budget over these projects: a global budget once per project."""
    policies = Policy.objects.filter(
        Q(project_id__in=project_ids) | Q(project__isnull=True), kind=PolicyKind.BUDGET
    ).order_by("project_id", "-priority", "id")
    now = timezone.now()
    statuses = []
    for policy in policies:
        targets = [policy.project_id] if policy.project_id else list(project_ids)
        statuses.extend(budget_status(policy, project_id, now) for project_id in targets)
    return statuses
