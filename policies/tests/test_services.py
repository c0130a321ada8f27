"""call_verdict and the ledger, one call at a time: which policies hit, what is recorded, and the
reservation arithmetic that keeps a budget; then a real race on PostgreSQL."""

import threading
from decimal import Decimal

import pytest
from django.db import connection

from policies.choices import EntryStatus, Outcome, PolicyAction, PolicyKind, Stage
from policies.models import PolicyDecision, SpendEntry
from policies.services import Call, call_verdict, spend_release, spend_settle
from runs.tests.factories import bare_run, echo_agent, make_catalog, make_workflow, tool

from .factories import PolicyDecisionFactory, PolicyFactory

USD = Decimal


def agent_call(run, agent=None, estimate: str | None = "0.60", tokens: int = 1000, **fields) -> Call:
    agent = agent or run.project.agents.get(slug="writer")
    return Call(
        project_id=run.project_id,
        run_id=run.pk,
        step_id=run.steps.get(key="a").pk,
        attempt=1,
        workflow_id=run.workflow_id,
        workflow_slug=run.workflow.slug,
        agent=agent,
        provider=agent.provider,
        model=agent.model,
        estimate_usd=None if estimate is None else USD(estimate),
        estimate_tokens=tokens,
        **fields,
    )


def tool_call(run, the_tool, **fields) -> Call:
    return Call(
        project_id=run.project_id,
        run_id=run.pk,
        step_id=run.steps.get(key="a").pk,
        attempt=1,
        workflow_slug=run.workflow.slug,
        tool=the_tool,
        **fields,
    )


def budget(project, amount="1.00", action=PolicyAction.BLOCK, **config):
    return PolicyFactory(
        project=project, name="Daily", config={"amount_usd": float(amount), "window": "day", **config}, action=action
    )


def policy(project, kind, config, action=PolicyAction.BLOCK, **fields):
    return PolicyFactory(project=project, kind=kind, config=config, action=action, **fields)


def decisions(**filters) -> list[tuple]:
    return list(PolicyDecision.objects.filter(**filters).order_by("id").values_list("policy__name", "outcome"))


def settle(call: Call, entry_id: int, cost: str) -> None:
    spend_settle(call=call, entry_id=entry_id, input_tokens=10, output_tokens=5, cost=USD(cost), price=None)


# ------------------------------------------------------------------------------
# Budgets: check and reserve
# ------------------------------------------------------------------------------
def test_a_refusal_shows_tiny_amounts_exactly(run):
    budget(run.project, "0.00002")
    first = agent_call(run, estimate="0.000001")
    settle(first, call_verdict(first).entry_id, "0.000049")

    blocked = call_verdict(agent_call(run, estimate="0.000003"))

    assert blocked.outcome == "blocked"
    assert "Budget 'Daily': $0.000049 of $0.00002 used or reserved" in blocked.hit.reason
    assert "this call may cost $0.000003." in blocked.hit.reason


def test_a_second_reservation_is_blocked_while_the_first_holds_the_budget(run):
    budget(run.project, "1.00")

    first = call_verdict(agent_call(run, estimate="0.60"))
    second = call_verdict(agent_call(run, estimate="0.60"))

    assert first.allowed
    assert second.outcome == "blocked"
    assert "Budget 'Daily': $0.60 of $1.00 used or reserved" in second.hit.reason
    assert "this call may cost $0.60" in second.hit.reason
    entry = SpendEntry.objects.get()
    assert (entry.pk, entry.status, entry.reserved_usd) == (first.entry_id, EntryStatus.RESERVED, USD("0.60"))
    assert (entry.run_id, entry.agent.slug, entry.provider, entry.model) == (run.pk, "writer", "echo", "echo-1")


def test_settling_a_reservation_below_its_estimate_frees_the_difference(run):
    budget(run.project, "1.00")
    call = agent_call(run, estimate="0.60")
    first = call_verdict(call)

    settle(call, first.entry_id, "0.10")
    second = call_verdict(agent_call(run, estimate="0.60"))

    assert second.allowed
    entries = SpendEntry.objects.order_by("id")
    assert [(e.status, e.cost_usd, e.reserved_usd) for e in entries] == [
        (EntryStatus.SETTLED, USD("0.10"), USD("0.60")),  # the estimate it held stays on record
        (EntryStatus.RESERVED, None, USD("0.60")),
    ]


def test_a_call_that_fits_exactly_is_allowed_and_the_next_cent_is_not(run):
    budget(run.project, "1.00")

    assert call_verdict(agent_call(run, estimate="1.00")).allowed
    assert call_verdict(agent_call(run, estimate="0.000001")).outcome == "blocked"


def test_a_released_reservation_no_longer_counts(run):
    budget(run.project, "1.00")
    first = call_verdict(agent_call(run, estimate="0.60"))

    spend_release(entry_id=first.entry_id)

    entry = SpendEntry.objects.get(pk=first.entry_id)
    assert (entry.status, entry.cost_usd, entry.input_tokens) == (EntryStatus.SETTLED, USD(0), 0)
    assert call_verdict(agent_call(run, estimate="0.60")).allowed


def test_an_expired_reservation_still_counts_and_a_late_settle_records_the_cost(run):
    budget(run.project, "1.00")
    call = agent_call(run, estimate="0.60")
    first = call_verdict(call)
    SpendEntry.objects.filter(pk=first.entry_id).update(status=EntryStatus.EXPIRED)

    assert call_verdict(agent_call(run, estimate="0.60")).outcome == "blocked"
    settle(call, first.entry_id, "0.05")
    assert SpendEntry.objects.get(pk=first.entry_id).status == EntryStatus.SETTLED
    assert call_verdict(agent_call(run, estimate="0.60")).allowed


def test_a_blocked_call_records_a_decision_and_reserves_nothing(run):
    daily = budget(run.project, "0.50")

    verdict = call_verdict(agent_call(run, estimate="0.60"))

    assert verdict.outcome == "blocked"
    (decision,) = verdict.decisions
    assert (decision.policy, decision.outcome, decision.stage) == (daily, Outcome.BLOCKED, Stage.CALL)
    assert (decision.run_id, decision.step.key) == (run.pk, "a")
    assert not SpendEntry.objects.exists()


def test_a_warning_budget_lets_the_call_through_and_reserves_it(run):
    budget(run.project, "0.50", action=PolicyAction.WARN)

    verdict = call_verdict(agent_call(run, estimate="0.60"))

    assert verdict.allowed
    assert decisions() == [("Daily", Outcome.WARNED)]
    assert SpendEntry.objects.get().reserved_usd == USD("0.60")


def test_an_approval_budget_asks_and_an_approved_call_is_overridden_and_reserved(run):
    budget(run.project, "0.50", action=PolicyAction.REQUIRE_APPROVAL)

    asked = call_verdict(agent_call(run, estimate="0.60"))
    approved = call_verdict(agent_call(run, estimate="0.60", granted=frozenset({asked.hit.key})))

    assert asked.outcome == "approval"
    assert asked.hit.role == "admin"
    assert approved.allowed
    assert decisions() == [("Daily", Outcome.APPROVAL_REQUIRED), ("Daily", Outcome.OVERRIDDEN)]
    assert SpendEntry.objects.get().pk == approved.entry_id


def test_a_budget_narrowed_to_another_agent_neither_blocks_nor_reserves(run, catalog):
    budget(run.project, "0.01", agent="helper")

    verdict = call_verdict(agent_call(run, agent=catalog.writer))

    assert verdict.allowed
    assert verdict.entry_id is None


def test_a_budget_narrowed_by_model_pattern_counts_only_matching_calls(run, catalog):
    budget(run.project, "1.00", model="echo/*")
    SpendEntry.objects.create(
        project=run.project, provider="openai", model="gpt-4o", cost_usd=USD("0.90"), created_at=run.queued_at
    )

    assert call_verdict(agent_call(run, estimate="0.60")).allowed  # the openai spend is not this budget's


def test_a_global_budget_applies_to_each_project_on_its_own(run, team):
    PolicyFactory(project=None, name="Everywhere", config={"amount_usd": 1, "window": "day"})
    SpendEntry.objects.create(
        project=team.other_project, provider="echo", model="echo-1", cost_usd=USD("0.90"), created_at=run.queued_at
    )

    assert call_verdict(agent_call(run, estimate="0.60")).allowed


def test_disabled_policies_and_other_projects_policies_do_not_apply(run, team):
    policy(run.project, PolicyKind.BUDGET, {"amount_usd": 0.01, "window": "day"}, enabled=False)
    budget(team.other_project, "0.01")

    verdict = call_verdict(agent_call(run, estimate="0.60"))

    assert verdict.allowed
    assert verdict.entry_id is None


def test_without_a_budget_or_ceiling_nothing_is_reserved(run):
    policy(run.project, PolicyKind.MODEL_ALLOWLIST, {"models": ["echo/*"]})

    verdict = call_verdict(agent_call(run))

    assert (verdict.allowed, verdict.entry_id, verdict.decisions) == (True, None, [])


# ------------------------------------------------------------------------------
# Unpriced models
# ------------------------------------------------------------------------------
def test_an_unpriced_model_under_a_budget_is_blocked(run):
    budget(run.project, "100")

    verdict = call_verdict(agent_call(run, estimate=None))

    assert verdict.outcome == "blocked"
    assert verdict.hit.reason == "Model echo/echo-1 has no price; 'Daily' cannot be kept."


def test_an_unpriced_model_under_a_warning_budget_is_warned_and_its_tokens_reserved(run):
    budget(run.project, "100", action=PolicyAction.WARN)

    verdict = call_verdict(agent_call(run, estimate=None, tokens=500))

    assert verdict.allowed
    assert decisions() == [("Daily", Outcome.WARNED)]
    entry = SpendEntry.objects.get(pk=verdict.entry_id)
    assert (entry.status, entry.reserved_usd, entry.input_tokens) == (EntryStatus.RESERVED, USD(0), 500)


def test_a_token_ceiling_is_kept_for_an_unpriced_model(run):
    policy(run.project, PolicyKind.RUN_CEILING, {"max_tokens": 1000}, name="Tokens")

    first = call_verdict(agent_call(run, estimate=None, tokens=600))
    second = call_verdict(agent_call(run, estimate=None, tokens=600))

    assert first.allowed
    assert second.outcome == "blocked"
    assert second.hit.reason == "Run ceiling 'Tokens': the run has used 600 of 1000 tokens; this call may use 600."


# ------------------------------------------------------------------------------
# Run ceilings
# ------------------------------------------------------------------------------
def test_a_run_ceiling_counts_the_runs_reservations_and_settled_calls(run, catalog):
    policy(run.project, PolicyKind.RUN_CEILING, {"max_usd": 1}, name="Per run")
    other_run = bare_run(run.workflow)
    call = agent_call(run, estimate="0.60")
    first = call_verdict(call)

    blocked = call_verdict(agent_call(run, estimate="0.60"))
    elsewhere = call_verdict(agent_call(other_run, estimate="0.60"))
    settle(call, first.entry_id, "0.30")
    after_settle = call_verdict(agent_call(run, estimate="0.60"))

    assert blocked.outcome == "blocked"
    assert blocked.hit.reason == "Run ceiling 'Per run': the run has used $0.60 of $1.00; this call may cost $0.60."
    assert elsewhere.allowed  # a ceiling is per run
    assert after_settle.allowed


def test_a_token_ceiling_counts_the_estimate_while_reserved_and_actual_tokens_once_settled(run):
    policy(run.project, PolicyKind.RUN_CEILING, {"max_tokens": 1000}, name="Tokens")
    call = agent_call(run, tokens=900)
    first = call_verdict(call)

    assert call_verdict(agent_call(run, tokens=200)).outcome == "blocked"  # 900 reserved + 200
    settle(call, first.entry_id, "0.01")  # 15 tokens used
    assert call_verdict(agent_call(run, tokens=200)).allowed


def test_the_strictest_hit_decides_and_every_warning_is_recorded(run):
    budget(run.project, "0.10", action=PolicyAction.WARN)
    policy(run.project, PolicyKind.RUN_CEILING, {"max_usd": 0.2}, name="Per run")

    verdict = call_verdict(agent_call(run, estimate="0.60"))

    assert verdict.outcome == "blocked"
    assert verdict.hit.policy.name == "Per run"
    assert decisions() == [("Per run", Outcome.BLOCKED)]


def test_of_two_blocking_budgets_the_higher_priority_one_is_reported(run):
    low = PolicyFactory(project=run.project, name="Low", config={"amount_usd": 0.1, "window": "day"}, priority=0)
    high = PolicyFactory(project=run.project, name="High", config={"amount_usd": 0.2, "window": "week"}, priority=9)
    assert low.pk < high.pk  # locked in id order, judged in priority order

    verdict = call_verdict(agent_call(run, estimate="0.60"))

    assert verdict.hit.policy == high
    assert decisions() == [("High", Outcome.BLOCKED)]


# ------------------------------------------------------------------------------
# Allow-lists and approval rules
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("models", "allowed"),
    [(["echo/*"], True), (["echo-1"], True), (["echo/echo-?"], True), (["openai/*", "echo-2"], False)],
)
def test_a_model_allowlist_matches_provider_and_model_globs(run, models, allowed):
    policy(run.project, PolicyKind.MODEL_ALLOWLIST, {"models": models}, name="Models")

    verdict = call_verdict(agent_call(run))

    assert verdict.allowed is allowed
    if not allowed:
        assert verdict.hit.reason == "Model echo/echo-1 is not on the allow-list of 'Models'."


def test_a_model_allowlist_says_nothing_about_tools_and_a_tool_allowlist_nothing_about_models(run, catalog):
    policy(run.project, PolicyKind.MODEL_ALLOWLIST, {"models": ["openai/*"]}, name="Models")
    policy(run.project, PolicyKind.TOOL_ALLOWLIST, {"tools": ["search"]}, name="Tools")

    assert call_verdict(tool_call(run, tool(run.project, "search"))).allowed
    assert call_verdict(agent_call(run)).hit.policy.name == "Models"
    assert call_verdict(tool_call(run, catalog.calc)).hit.reason == "Tool 'calc' is not on the allow-list of 'Tools'."


@pytest.mark.parametrize(
    ("covered", "risk", "asks"),
    [
        ("write", "read", False),
        ("write", "write", True),
        ("write", "destructive", True),
        ("write", "spends_money", True),
        ("destructive", "write", False),
    ],
)
def test_an_approval_rule_covers_its_risk_class_and_those_above(run, covered, risk, asks):
    policy(run.project, PolicyKind.APPROVAL, {"risk_class": covered}, PolicyAction.REQUIRE_APPROVAL, name="Risky")
    the_tool = tool(run.project, "wipe", risk_class=risk)

    verdict = call_verdict(tool_call(run, the_tool))

    assert verdict.outcome == ("approval" if asks else "allowed")
    if asks:
        assert verdict.hit.reason == f"Tool 'wipe' is {risk}; 'Risky' covers {covered} and above."


def test_an_approval_rule_by_cost_asks_for_expensive_agent_calls_only(run):
    policy(run.project, PolicyKind.APPROVAL, {"min_cost_usd": 0.5, "role": "owner"}, "require_approval", name="Dear")

    cheap = call_verdict(agent_call(run, estimate="0.49"))
    dear = call_verdict(agent_call(run, estimate="0.50"))

    assert cheap.allowed
    assert dear.outcome == "approval"
    assert dear.hit.role == "owner"
    assert dear.hit.reason == "The call may cost up to $0.50; 'Dear' asks from $0.50."


def test_a_tools_own_approval_flag_asks_with_no_policy(run):
    flagged = tool(run.project, "deploy", requires_approval=True)

    verdict = call_verdict(tool_call(run, flagged), policies=[])

    assert verdict.outcome == "approval"
    assert (verdict.hit.policy, verdict.hit.role) == (None, "admin")
    (decision,) = verdict.decisions
    assert (decision.policy, decision.outcome) == (None, Outcome.APPROVAL_REQUIRED)


def test_an_approval_lets_only_what_it_was_asked_about_pass(run, catalog):
    budget(run.project, "0.50", action=PolicyAction.REQUIRE_APPROVAL)
    ask = policy(run.project, PolicyKind.APPROVAL, {"tools": ["calc"]}, "require_approval", name="Ask")
    asked = call_verdict(agent_call(run, estimate="0.60"))
    granted = frozenset({asked.hit.key})

    tool_verdict = call_verdict(tool_call(run, catalog.calc, granted=granted))
    spend_verdict = call_verdict(agent_call(run, estimate="0.60", granted=granted))

    assert asked.hit.key.endswith(":spend")
    assert (tool_verdict.outcome, tool_verdict.hit.policy) == ("approval", ask)
    assert tool_verdict.hit.key == f"{ask.pk}:tool:calc"
    assert spend_verdict.allowed


def test_a_block_beats_an_approval(run, catalog):
    ask = policy(run.project, PolicyKind.APPROVAL, {"tools": ["calc"]}, "require_approval", name="Ask")
    policy(run.project, PolicyKind.TOOL_ALLOWLIST, {"tools": ["search"]}, name="Tools")

    verdict = call_verdict(tool_call(run, catalog.calc, granted=frozenset({f"{ask.pk}:tool:calc"})))

    assert verdict.outcome == "blocked"
    assert verdict.hit.policy.name == "Tools"


def test_spend_settle_without_a_reservation_writes_a_settled_entry(run):
    call = agent_call(run)

    spend_settle(call=call, entry_id=None, input_tokens=7, output_tokens=3, cost=USD("0.002"), price=None)

    entry = SpendEntry.objects.get()
    assert (entry.status, entry.reserved_usd, entry.cost_usd) == (EntryStatus.SETTLED, USD(0), USD("0.002"))
    assert (entry.input_tokens, entry.output_tokens, entry.run_id) == (7, 3, run.pk)


# ------------------------------------------------------------------------------
# The race, on PostgreSQL
# ------------------------------------------------------------------------------
def _global_budget(project):
    return PolicyFactory(project=None, kind=PolicyKind.BUDGET, config={"amount_usd": 1, "window": "day"})


def _run_ceiling(project):
    return PolicyFactory(project=project, kind=PolicyKind.RUN_CEILING, config={"max_usd": 1})


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "limit",
    [lambda project: budget(project, "1.00"), _global_budget, _run_ceiling],
    ids=["project budget (policy row lock)", "global budget (project row lock)", "run ceiling (run row lock)"],
)
def test_concurrent_reservations_never_take_more_than_the_limit(team, limit):
    if connection.vendor != "postgresql":
        # SQLite's IMMEDIATE transactions run the reservations one after the other: no race.
        pytest.skip("needs concurrent writers (PostgreSQL)")
    catalog = make_catalog(team.project)
    run = bare_run(make_workflow(catalog.project))
    limit(run.project)
    callers, barrier = 30, threading.Barrier(30)
    outcomes: list[str] = []

    def reserve():
        try:
            barrier.wait(10)
            outcomes.append(call_verdict(agent_call(run, agent=catalog.writer, estimate="0.05")).outcome)
        finally:
            connection.close()

    threads = [threading.Thread(target=reserve) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(outcomes) == ["allowed"] * 20 + ["blocked"] * 10
    assert SpendEntry.objects.filter(status=EntryStatus.RESERVED).count() == 20
    assert sum(e.reserved_usd for e in SpendEntry.objects.all()) == USD("1.00")
    assert PolicyDecision.objects.filter(outcome=Outcome.BLOCKED).count() == 10


def test_a_decision_outlives_its_deleted_policy(db):
    decision = PolicyDecisionFactory()
    project = decision.project

    decision.policy.delete()

    decision.refresh_from_db()
    assert (decision.policy, decision.project, decision.outcome) == (None, project, Outcome.BLOCKED)


def test_an_agent_budget_still_counts_the_spend_of_a_deleted_agent_of_that_name(run, catalog):
    budget(run.project, "1.00", agent="writer")
    first = call_verdict(agent_call(run, estimate="0.60"))
    spend_settle(
        call=agent_call(run), entry_id=first.entry_id, input_tokens=10, output_tokens=10, cost=USD("0.60"), price=None
    )
    catalog.writer.delete()
    echo_agent(run.project, "writer")

    second = call_verdict(agent_call(run, estimate="0.60"))

    assert SpendEntry.objects.get(pk=first.entry_id).agent_slug == "writer"
    assert second.outcome == "blocked"
