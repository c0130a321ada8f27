"""Policy services: save a policy, judge a provider or tool call, reserve, settle and expire spend.

The engine (runs) asks ``call_verdict`` before every provider or tool call; each kind judged at
the call stage (policies/kinds/) says what it objects to. Budgets and run ceilings are checked
and the call's estimated maximum cost reserved in one transaction, under a row lock on each
policy involved: two workers cannot both take a budget's last dollar. These services are the
only writers of the ledger (SpendEntry) and of the decisions (PolicyDecision); run-level
questions (admission, slots) are in policies/admission.py.
"""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from projects.models import Project
from sparkops.roles import Role

from . import kinds, totals
from .choices import EntryStatus, Outcome, PolicyAction, PolicyKind, Stage
from .kinds.base import Call
from .models import ZERO, Policy, PolicyDecision, SpendEntry
from .money import ledger_usd
from .selectors import policies_for
from .signals import spend_reserved


def policy_save(*, policy: Policy) -> Policy:
    policy.full_clean()
    policy.save()
    return policy


def decision_record(
    *, policy: Policy | None, project_id, stage: str, outcome: str, reason: str, run_id=None, step_id=None
) -> PolicyDecision:
    """Log a policy acting (blocking, warning, holding or asking)."""
    return PolicyDecision.objects.create(
        policy=policy,
        project_id=project_id,
        run_id=run_id,
        step_id=step_id,
        stage=stage,
        outcome=outcome,
        reason=reason[:500],
    )


# ------------------------------------------------------------------------------
# Judging a call
# ------------------------------------------------------------------------------
def policies_before_calls(project_id) -> list[Policy]:
    """The policies a step's calls are judged by: every kind judged at the call stage."""
    return policies_for(project_id, kinds.at(kinds.CALL))


def holds_spend(policies: list[Policy]) -> bool:
    """Whether any of these policies reserves each call's estimated cost (a budget, a ceiling)."""
    return any(kind.reserves for policy in policies if (kind := kinds.get(policy.kind)))


@dataclass
class Hit:
    policy: Policy | None  # None for a tool's own "requires approval" flag
    action: str
    reason: str
    #: What the policy objects to ("tool:wipe", "model:openai/gpt-4o", "spend", "cost"): an
    #: approval lets this policy pass for this subject in this step, and nothing else.
    subject: str = ""

    @property
    def key(self) -> str:
        return f"{self.policy.pk if self.policy else 'tool-flag'}:{self.subject}"

    @property
    def role(self) -> str:
        return (self.policy.config.get("role") if self.policy else None) or Role.ADMIN

    @property
    def staff_only(self) -> bool:
        """A global policy's holds are staff's to decide: a project admin cannot lift them."""
        return self.policy is not None and self.policy.project_id is None


@dataclass
class Verdict:
    outcome: str = "allowed"  # allowed | blocked | approval
    hit: Hit | None = None  # the deciding hit when not allowed
    decisions: list[PolicyDecision] = field(default_factory=list)
    entry_id: int | None = None  # the reservation, when one was made

    @property
    def allowed(self) -> bool:
        return self.outcome == "allowed"


def call_verdict(call: Call, policies: list[Policy] | None = None) -> Verdict:
    """Allow, block or send for approval one provider or tool call; reserve its cost when a budget
    or ceiling applies. Records a decision for every policy that blocks, warns or asks."""
    if policies is None:
        policies = policies_before_calls(call.project_id)
    hits = _rule_hits(call, policies)
    verdict = _judge(call, hits)
    if verdict.allowed and call.agent is not None:
        spend_policies = [p for p in policies if _spend_applies(p, call)]
        if spend_policies:
            verdict = _reserve(call, spend_policies, verdict)
    return verdict


def _rule_hits(call: Call, policies: list[Policy]) -> list[Hit]:
    tool_subject = f"tool:{call.tool.slug}" if call.tool is not None else ""
    hits = []
    if call.tool is not None and call.tool.requires_approval:
        reason = f"Tool {call.tool.slug!r} requires approval for every call."
        hits.append(Hit(None, PolicyAction.REQUIRE_APPROVAL, reason, tool_subject))
    for policy in policies:
        kind = kinds.get(policy.kind)
        if kind is None or kinds.CALL not in kind.stages or kind.reserves:
            continue  # reserving kinds are judged under lock, in _reserve
        if objection := kind.judge(policy, call):
            subject = tool_subject or kind.subject(policy, call)
            hits.append(Hit(policy, policy.action, objection.reason, subject))
    return hits


def _judge(call: Call, hits: list[Hit], verdict: Verdict | None = None) -> Verdict:
    """The strictest hit decides: block, then approval; warnings and overrides are recorded."""
    verdict = verdict or Verdict()
    blocking = next((h for h in hits if h.action == PolicyAction.BLOCK), None)
    asking = [h for h in hits if h.action == PolicyAction.REQUIRE_APPROVAL]
    if blocking is not None:
        verdict.outcome, verdict.hit = "blocked", blocking
        _decide(verdict, call, blocking, Outcome.BLOCKED)
        return verdict
    waiting = [h for h in asking if h.key not in call.granted]
    if waiting:
        verdict.outcome, verdict.hit = "approval", waiting[0]
        _decide(verdict, call, waiting[0], Outcome.APPROVAL_REQUIRED)
        return verdict
    for hit in asking:
        _decide(verdict, call, hit, Outcome.OVERRIDDEN)
    for hit in hits:
        if hit.action == PolicyAction.WARN:
            _decide(verdict, call, hit, Outcome.WARNED)
    return verdict


def _decide(verdict: Verdict, call: Call, hit: Hit, outcome: str) -> None:
    verdict.decisions.append(
        decision_record(
            policy=hit.policy,
            project_id=call.project_id,
            run_id=call.run_id,
            step_id=call.step_id,
            stage=Stage.CALL,
            outcome=outcome,
            reason=hit.reason,
        )
    )


def tool_test_refusal(*, tool: Any, role: str | None, is_staff: bool) -> str:
    """Why this caller may not run ``tool`` outside a run (a test run), or "". The call is judged
    as a step's would be, so a test run is no way around an allow-list or approval rule: a
    blocking policy refuses everyone, and a call that would wait for approval may be tested only
    by whoever could approve it. Nothing is recorded: no run asked."""
    call = Call(project_id=tool.project_id, run_id=None, step_id=0, attempt=0, tool=tool)
    # The kinds that judge tool calls: test runs make no provider call and spend nothing.
    for hit in _rule_hits(call, policies_for(tool.project_id, (PolicyKind.TOOL_ALLOWLIST, PolicyKind.APPROVAL))):
        if hit.action == PolicyAction.BLOCK:
            return f"{hit.reason} Test runs are judged like calls in a run."
        if hit.action == PolicyAction.REQUIRE_APPROVAL and not _may_approve(hit, role, is_staff):
            who = "staff" if hit.staff_only else f"the {hit.role} role"
            return f"{hit.reason} Test-running it needs whoever may approve its calls: {who}."
    return ""


def _may_approve(hit: Hit, role: str | None, is_staff: bool) -> bool:
    return is_staff if hit.staff_only else Role.at_least(role, hit.role)


# ------------------------------------------------------------------------------
# Budgets and run ceilings: check and reserve at once
# ------------------------------------------------------------------------------
def _spend_applies(policy: Policy, call: Call) -> bool:
    kind = kinds.get(policy.kind)
    return kind is not None and kind.reserves and kind.covers(policy, call)


def _per_run(policy: Policy) -> bool:
    kind = kinds.get(policy.kind)
    return kind is not None and kind.per_run


def lock_scopes(policies: list[Policy], *, project_id, run_id=None) -> None:
    """Serialize check-and-reserve per thing a limit is kept for. The race: two workers each read
    $0.95 spent of $1.00 and both reserve $0.05; with the lock the second waits until the first's
    reservation is committed, then counts it. A project's own budget locks its policy row; a global
    one is kept per project, so it locks the project row (not one row for the whole platform); a
    run ceiling locks the run. Always in this order — run, project, policies by id — the order the
    engine's advance also follows (run, then policies), so no two transactions deadlock. NO KEY
    locks: rows that point at these (ledger entries, runs) are still inserted meanwhile."""
    if run_id is not None and any(_per_run(p) for p in policies):
        _lock_run(run_id)
    if any(p.project_id is None for p in policies if not _per_run(p)):
        list(Project.objects.select_for_update(no_key=True).filter(pk=project_id).values_list("pk"))
    own = [p.pk for p in policies if p.project_id is not None and not _per_run(p)]
    if own:
        list(Policy.objects.select_for_update(no_key=True).filter(pk__in=own).order_by("pk").values_list("pk"))


def _lock_run(run_id) -> None:
    """The run's row, by a plain statement: on every call under a run ceiling, where the ORM's
    building of it cost more than the database's answer. SQLite runs one writer at a time."""
    if not connection.features.has_select_for_update:
        return
    run_field = SpendEntry._meta.get_field("run")  # runs sits above policies: its table by the key
    sql = f"SELECT 1 FROM {run_field.related_model._meta.db_table} WHERE id = %s FOR NO KEY UPDATE"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, [run_field.get_db_prep_value(run_id, connection)])


def _reserve(call: Call, policies: list[Policy], verdict: Verdict) -> Verdict:
    now = timezone.now()
    # A priced call takes its estimate from the running total of each calendar budget at once,
    # which locks it; an unpriced one is judged without taking (a dollar limit cannot be kept).
    kept = [p for p in policies if totals.kept(p)] if call.estimate_usd is not None else []
    with transaction.atomic():
        lock_scopes(policies, project_id=call.project_id, run_id=call.run_id)
        taken = totals.take(kept, project_id=call.project_id, amount=call.estimate_usd, now=now)
        call.budget_uses.update({pk: (span, use) for pk, (_, span, use) in taken.items()})
        counted_in = [total_id for ids, _, _ in taken.values() for total_id in ids]
        hits = [hit for policy in policies if (hit := _spend_hit(policy, call))]  # priority order
        verdict = _judge(call, hits, verdict)
        if not verdict.allowed:
            totals.give_back(counted_in, call.estimate_usd or ZERO)
            return verdict
        verdict.entry_id = _open_entry(call, now, counted_in)
        budgets = [p for p in policies if p.kind == PolicyKind.BUDGET]
        if budgets:
            spend_reserved.send(sender=SpendEntry, project_id=call.project_id, budgets=budgets, call=call)
    return verdict


def _spend_hit(policy: Policy, call: Call) -> Hit | None:
    kind = kinds.get(policy.kind)
    # A dollar limit cannot be kept for a model with no price; a ceiling of tokens alone can.
    if call.estimate_usd is None and kind.keeps_dollars(policy):
        return Hit(
            policy,
            policy.action,
            f"Model {call.provider}/{call.model} has no price; {policy.name!r} cannot be kept.",
            "spend",
        )
    if objection := kind.judge(policy, call):
        return Hit(policy, policy.action, objection.reason, kind.subject(policy, call))
    return None


def _new_entry(call: Call, created_at: datetime | None = None, **values) -> int:
    """Write a ledger entry; its id. Every provider call writes one."""
    return _insert_entry(
        project_id=call.project_id,
        run_id=call.run_id,
        step_id=call.step_id,
        attempt=call.attempt,
        workflow_id=call.workflow_id,
        workflow_slug=call.workflow_slug,
        agent_id=call.agent.pk if call.agent is not None else None,
        agent_slug=call.agent.slug if call.agent is not None else "",
        provider=call.provider,
        model=call.model,
        created_at=created_at or timezone.now(),
        **values,
    )


def _open_entry(call: Call, now: datetime, counted_in: list[int]) -> int:
    # Dated by the moment its windows were read: the entry falls in the window it was counted in.
    return _new_entry(
        call,
        now,
        counted_in=counted_in,
        status=EntryStatus.RESERVED,
        reserved_usd=call.estimate_usd or ZERO,  # an unpriced call let through holds its tokens only
        input_tokens=call.estimate_tokens,
    )


def _insert_entry(**values) -> int:
    """SpendEntry.objects.create(), by a plain INSERT of every field (the given value or the
    field's default, adapted by the field): the ORM's building of it cost more than the database's
    answer, on a path every provider call takes."""
    fields = [field for field in SpendEntry._meta.concrete_fields if not field.primary_key]
    params = [
        field.get_db_prep_save(values[field.attname] if field.attname in values else field.get_default(), connection)
        for field in fields
    ]
    columns, marks = ", ".join(field.column for field in fields), ", ".join(["%s"] * len(fields))
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {SpendEntry._meta.db_table} ({columns}) VALUES ({marks}) RETURNING id", params)  # noqa: S608
        return cursor.fetchone()[0]


# ------------------------------------------------------------------------------
# The ledger after the call
# ------------------------------------------------------------------------------
def spend_settle(
    *,
    call: Call,
    entry_id: int | None,
    input_tokens: int,
    output_tokens: int,
    cost: Decimal | None,
    price,
    later: list | None = None,
) -> None:
    """Record the call's actual tokens and cost: settle its reservation, or write its entry.
    ``later``: the moves of the budget totals are appended there instead of made, for the caller
    to make before its transaction commits; made last, they hold each total's row lock (which
    every call under the budget takes) for the shortest time."""
    now = timezone.now()
    if entry_id is not None:
        # A reservation the reaper expired (its worker looked lost) is settled all the same; one
        # settled already (a retry whose first commit lost its answer) is left as it is.
        values = [input_tokens, output_tokens, cost, price.pk if price is not None else None]
        if _close(entry_id, values, now, spent=cost or ZERO, only_reserved=False, later=later):
            return
        if SpendEntry.objects.filter(pk=entry_id).exists():
            return
    _new_entry(
        call,
        status=EntryStatus.SETTLED,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost,
        price_id=price.pk if price is not None else None,
        settled_at=now,
    )


def spend_release(*, entry_id: int | None) -> None:
    """The call failed (an error answer, or none): providers bill completed calls, free it."""
    if entry_id is not None:
        _close(entry_id, [0, 0, ZERO, None], timezone.now(), spent=ZERO, only_reserved=True)


_CLOSE = (
    "UPDATE policies_spendentry SET status = 'settled', input_tokens = %s, output_tokens = %s, cost_usd = %s,"
    " price_id = %s, settled_at = %s WHERE id = %s AND "
)
_CLOSE_RESERVED = _CLOSE + "status = 'reserved' RETURNING reserved_usd, counted_in"
_CLOSE_UNSETTLED = _CLOSE + "status <> 'settled' RETURNING reserved_usd, counted_in"


def _close(
    entry_id: int, values: list, now: datetime, *, spent: Decimal, only_reserved: bool, later: list | None = None
) -> bool:
    """Settle an entry (tokens, cost, price) that is still reserved, or with ``only_reserved``
    False also expired, and move its reservation to ``spent`` in the budget totals it was counted
    in, in one transaction. Whether it did: an entry settled already is left alone."""
    sql = _CLOSE_RESERVED if only_reserved else _CLOSE_UNSETTLED
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:  # the moves too, unless later
        cursor.execute(sql, [*values, connection.ops.adapt_datetimefield_value(now), entry_id])
        row = cursor.fetchone()
        if row is not None:
            move = partial(totals.move, totals.ids_of(row[1]), reserved=ledger_usd(row[0]), spent=spent)
            if later is None:
                move()
            else:
                later.append(move)
    return row is not None


def reservations_expire(*, stale_before: datetime, running: str) -> int:
    """Reservations whose attempt is no longer running: its worker died between reserving and
    settling. The provider may have billed the call, so the estimate stays counted (expired, not
    released); a late settle from a worker that was only slow still records the actual cost.
    ``running``: the status of a step running its attempt (runs' value, passed in)."""
    orphaned = (
        SpendEntry.objects.filter(status=EntryStatus.RESERVED, created_at__lt=stale_before)
        .exclude(step__status=running, step__attempt=F("attempt"))
        .values_list("pk", flat=True)[:500]
    )
    return SpendEntry.objects.filter(pk__in=list(orphaned), status=EntryStatus.RESERVED).update(
        status=EntryStatus.EXPIRED
    )
