"""Run-level judging on the policies side, with the facts about runs handed in as runs would: no
run rows, no engine. The engine's side (runs held, released, refused through the API) is in
runs/tests/test_policies_engine.py."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from policies.admission import admission_judge, refusal_record, slot_judge
from policies.choices import Outcome, PolicyAction, PolicyKind, Stage
from policies.exceptions import PolicyRefused
from policies.kinds.base import Admission, Contender
from policies.models import PolicyDecision
from projects.tests.factories import ProjectFactory

from .factories import PolicyFactory, SpendEntryFactory

pytestmark = pytest.mark.django_db


def _no_runs(since, api_key):
    raise AssertionError("a budget at admission reads the ledger, not the runs")


def _admission(project, slug="digest", runs_started=_no_runs) -> Admission:
    return Admission(project_id=project.pk, workflow_slug=slug, api_key=None, runs_started=runs_started)


def _contender(pk, *, holds_slot=False, minutes_ago=0, waiting_on=None, workflow="digest") -> Contender:
    return Contender(
        pk=pk,
        holds_slot=holds_slot,
        waiting=not holds_slot,
        priority=0,
        queued_at=timezone.now() - timedelta(minutes=minutes_ago),
        waiting_on=waiting_on,
        workflow_slug=workflow,
        task_agent_slug=None,
    )


def test_an_exhausted_budget_refuses_a_run_it_covers_and_a_warning_one_warns():
    project = ProjectFactory()
    blocking = PolicyFactory(project=project, config={"amount_usd": 1, "window": "day"})
    SpendEntryFactory(project=project, cost_usd=Decimal(1))

    with pytest.raises(PolicyRefused) as caught:
        admission_judge(admission=_admission(project))

    assert caught.value.policy == blocking
    assert caught.value.status_code == 422
    assert caught.value.reason.startswith(f"Budget {blocking.name!r} is exhausted: $1.00 of $1.00 used until ")
    blocking.action = PolicyAction.WARN
    blocking.save()
    (warning,) = admission_judge(admission=_admission(project))
    assert warning.policy == blocking


def test_a_budget_narrowed_to_another_workflow_does_not_refuse_at_admission():
    project = ProjectFactory()
    PolicyFactory(project=project, config={"amount_usd": 1, "window": "day", "workflow": "other"})
    SpendEntryFactory(project=project, cost_usd=Decimal(1))

    assert admission_judge(admission=_admission(project)) == []


def test_a_rate_limit_counts_the_runs_it_is_given():
    project = ProjectFactory()
    limit = PolicyFactory(project=project, kind=PolicyKind.RATE_LIMIT, config={"max_runs": 2, "per": "minute"})
    asked = []

    def runs_started(since, api_key):
        asked.append(api_key)
        times = [timezone.now() - timedelta(seconds=50), timezone.now() - timedelta(seconds=10)]
        return _Times(times)

    with pytest.raises(PolicyRefused) as caught:
        admission_judge(admission=_admission(project, runs_started=runs_started))

    assert caught.value.policy == limit
    assert caught.value.status_code == 429
    assert caught.value.retry_after in (10, 11)
    assert asked == [None]  # a project-wide limit counts every run of the project


class _Times(list):
    """What runs hands in: ascending queue times, counted by the database."""

    def count(self) -> int:
        return len(self)


def test_a_refusal_is_recorded_once_per_policy_in_ten_seconds():
    project = ProjectFactory()
    policy = PolicyFactory(project=project)
    refusal = PolicyRefused(policy, "No.")

    refusal_record(project_id=project.pk, refusal=refusal)
    refusal_record(project_id=project.pk, refusal=refusal)

    decision = PolicyDecision.objects.get()
    assert (decision.stage, decision.outcome, decision.run_id) == (Stage.ADMISSION, Outcome.BLOCKED, None)


def test_without_a_slot_limit_there_is_no_verdict():
    project = ProjectFactory()
    assert slot_judge(project_id=project.pk, run_id=1, contenders=_no_runs) is None


def test_a_full_slot_limit_names_the_runs_active_and_ahead():
    project = ProjectFactory()
    limit = PolicyFactory(project=project, kind=PolicyKind.CONCURRENCY, config={"max_active": 2})
    rows = [
        _contender(1, holds_slot=True, minutes_ago=9),
        _contender(2, minutes_ago=5),  # ahead, waiting for this limit's slot too
        _contender(3, minutes_ago=4, waiting_on=limit.pk + 1000),  # held by another limit: not ahead
        _contender(4, minutes_ago=1),
    ]

    verdict = slot_judge(project_id=project.pk, run_id=4, contenders=lambda with_agents: rows)

    assert verdict.blocking == (limit, f"Concurrency limit {limit.name!r}: 1 of 2 runs active, 1 ahead in the queue.")
    assert slot_judge(project_id=project.pk, run_id=2, contenders=lambda with_agents: rows).full == []


def test_a_slot_limit_over_another_workflow_leaves_the_run_alone():
    project = ProjectFactory()
    PolicyFactory(project=project, kind=PolicyKind.CONCURRENCY, config={"max_active": 1, "workflow": "other"})
    rows = [_contender(1, holds_slot=True), _contender(2)]

    assert slot_judge(project_id=project.pk, run_id=2, contenders=lambda with_agents: rows).full == []
