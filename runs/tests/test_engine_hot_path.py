"""The engine's hot path: a linear run costs one task, a step a bounded number of statements, and
a stopping worker hands back the step it runs inline. Tasks run eagerly after commit (``engine``)."""

from datetime import timedelta

import pytest
from celery.signals import task_prerun
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from policies.choices import PolicyKind
from policies.models import SpendEntry
from policies.tests.factories import PolicyFactory
from runs import services, shutdown
from runs.choices import EventType, RunStatus, StepStatus
from runs.engine import core
from runs.models import Run, RunEvent, RunStep

from .factories import agent_step, bare_run, make_catalog, make_workflow, start, statuses, step_of

# Statements one more step of a linear run costs (claim, call, outcome and advance), BEGIN and
# COMMIT aside: 21 on PostgreSQL before the step queued by the advance ran in the same task; 19
# after; 17 since the call's tokens and cost are added to the run's and the step's by the outcome's
# own UPDATEs; 14 since the advance claims the step it leaves to its task in its own transaction;
# 10 since the agent, its tools, the call policies and the price come from the process's catalog
# (runs/engine/catalog.py); 9 since the outcome and the advance share one transaction, the outcome's
# UPDATE of the run reading back what the advance needs (runs/engine/transitions.py); 8 since the
# run's status that UPDATE reads is the check for a cancel after the call, not a SELECT of its own.
# The live stream's NOTIFY is a trigger's, not a statement (live/migrations).
STATEMENTS_PER_STEP = {"postgresql": 8, "sqlite": 9}
# What a budget and a run ceiling add to it: BEGIN and COMMIT aside, the run's and the budget's
# locks, the run's sum, the budget's running total and the ledger entry before the call; the
# entry and the total after it. Before the running totals, the total's UPDATE was a sum of the
# window's ledger, whose cost grew with it. SQLite takes no row lock: it runs one writer at a time.
POLICY_STATEMENTS_PER_STEP = 7


@pytest.fixture
def catalog(team):
    return make_catalog(team.project)


@pytest.fixture
def step_tasks():
    names = []

    def record(task=None, **kwargs):
        names.append(task.name)

    task_prerun.connect(record, weak=False)
    yield names
    task_prerun.disconnect(record)


def linear(project, n: int, slug: str):
    steps = [agent_step("s0")] + [agent_step(f"s{i}", depends_on=[f"s{i - 1}"]) for i in range(1, n)]
    return make_workflow(project, *steps, slug=slug)


def test_a_linear_run_runs_in_one_step_task_with_its_events_numbered_without_gaps(engine, catalog, step_tasks):
    run = start(linear(catalog.project, 4, "four"))

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    # s0 was queued as the run was written (no advance task first); s1..s3 ran in s0's task.
    assert step_tasks == ["runs.step_execute"]
    assert [(e.type, e.step and e.step.key) for e in RunEvent.objects.filter(run=run).order_by("sequence")[:4]] == [
        (EventType.RUN_QUEUED, None),
        (EventType.STEP_QUEUED, "s0"),
        (EventType.RUN_STARTED, None),  # by s0's claim
        (EventType.STEP_STARTED, "s0"),
    ]
    assert run.started_at is not None
    sequences = list(RunEvent.objects.filter(run=run).order_by("sequence").values_list("sequence", flat=True))
    assert sequences == list(range(1, run.event_seq + 1))
    assert [e.payload["key"] for e in RunEvent.objects.filter(run=run, type=EventType.STEP_STARTED)] == [
        "s0",
        "s1",
        "s2",
        "s3",
    ]


def test_steps_that_can_run_in_parallel_are_each_sent_to_the_broker(engine, catalog, step_tasks):
    workflow = make_workflow(
        catalog.project, agent_step("a"), agent_step("b", depends_on=["a"]), agent_step("c", depends_on=["a"])
    )
    run = start(workflow)

    assert statuses(run) == {"a": StepStatus.SUCCEEDED, "b": StepStatus.SUCCEEDED, "c": StepStatus.SUCCEEDED}
    assert step_tasks.count("runs.step_execute") == 3


def test_a_run_with_two_first_steps_starts_once(engine, catalog, step_tasks):
    run = start(make_workflow(catalog.project, agent_step("a"), agent_step("b")))

    assert statuses(run) == {"a": StepStatus.SUCCEEDED, "b": StepStatus.SUCCEEDED}
    types = list(RunEvent.objects.filter(run=run).order_by("sequence").values_list("type", flat=True))
    assert types.count(EventType.RUN_STARTED) == 1
    assert types.index(EventType.RUN_STARTED) < types.index(EventType.STEP_STARTED)
    assert step_tasks == ["runs.step_execute", "runs.step_execute"]


@pytest.mark.django_db(transaction=True)
def test_a_run_cancelled_before_its_first_claim_never_starts(catalog):
    run = start(linear(catalog.project, 2, "pair"))  # not executed: tasks are not eager here
    first = step_of(run, "s0")
    assert first.status == StepStatus.QUEUED

    services.run_cancel(run=run)
    core.advance(run.pk)  # the advance run_cancel sends
    core.execute(first.pk)  # the step's message, delivered late

    run.refresh_from_db()
    assert (run.status, run.started_at) == (RunStatus.CANCELLED, None)
    assert statuses(run) == {"s0": StepStatus.CANCELLED, "s1": StepStatus.CANCELLED}
    assert not RunEvent.objects.filter(run=run, type__in=[EventType.RUN_STARTED, EventType.STEP_STARTED]).exists()


@pytest.mark.django_db(transaction=True)
def test_the_reaper_leaves_a_queued_run_to_its_queued_step_and_sends_the_step_again(catalog):
    run = start(linear(catalog.project, 2, "pair"))
    long_ago = timezone.now() - timedelta(minutes=10)
    Run.objects.filter(pk=run.pk).update(updated_at=long_ago)
    RunStep.objects.filter(run=run, key="s0").update(lease_expires_at=long_ago)  # its message was lost

    counts = core.reap()

    assert (counts["steps"], counts["runs"]) == (1, 0)  # the step again, not an advance of its run
    core.execute(step_of(run, "s0").pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert RunEvent.objects.filter(run=run, type=EventType.RUN_STARTED).count() == 1


def _chain_statements(project, n: int) -> int:
    return len(_chain_sql(project, n))


def _chain_sql(project, n: int) -> list[str]:
    workflow = linear(project, n, f"chain-{n}")
    for _ in range(2):  # the first warms what is cached (the run's version)
        run = bare_run(workflow, status=RunStatus.RUNNING)
        first = step_of(run, "s0")
        RunStep.objects.filter(pk=first.pk).update(status=StepStatus.QUEUED, lease_expires_at=timezone.now())
        with CaptureQueriesContext(connection) as queries:
            core.execute(first.pk)
        assert set(statuses(run).values()) == {StepStatus.SUCCEEDED}
    return [q["sql"] for q in queries.captured_queries if q["sql"] not in ("BEGIN", "COMMIT")]


def test_a_middle_step_takes_a_bounded_number_of_statements(engine, catalog):
    # The difference between a chain of three and one of two: one middle step, end to end.
    middle = _chain_statements(catalog.project, 3) - _chain_statements(catalog.project, 2)

    assert middle <= STATEMENTS_PER_STEP[connection.vendor]


# A one-step run from its claim to its end: the claim (the step read with its run, the run's and
# the step's UPDATEs, the event), the success (the run's and the step's UPDATEs, the ledger entry,
# the events), the advance's read of the steps, the run's end and its event, its notice (the run
# read for it, the webhook endpoints it goes to) and, after commit, the run's sandboxes. SQLite
# counts its two BEGIN IMMEDIATE. 17 on PostgreSQL before a run already running was no longer
# moved to running by an UPDATE that matched nothing, and a run that succeeded no longer read its
# tasks (which only a failed or cancelled run settles).
RUN_STATEMENTS = {"postgresql": 15, "sqlite": 17}


def test_a_one_step_run_from_claim_to_end_takes_a_bounded_number_of_statements(engine, catalog):
    assert len(_chain_sql(catalog.project, 1)) <= RUN_STATEMENTS[connection.vendor]


def test_a_middle_step_under_a_budget_and_a_run_ceiling_reads_no_window_of_the_ledger(engine, catalog):
    # Checked and reserved in one transaction before the call (the run's lock and sum, the
    # budget's running total, the ledger entry), settled with the success: the statements of a
    # middle step do not grow with what the budget's window has spent (policies/totals.py).
    daily = {"amount_usd": 100, "window": "day"}
    PolicyFactory(project=catalog.project, kind=PolicyKind.BUDGET, name="Daily", config=daily)
    PolicyFactory(project=catalog.project, kind=PolicyKind.RUN_CEILING, name="Ceiling", config={"max_usd": 10})

    two, three = _chain_sql(catalog.project, 2), _chain_sql(catalog.project, 3)

    assert len(three) - len(two) <= STATEMENTS_PER_STEP[connection.vendor] + POLICY_STATEMENTS_PER_STEP
    window_sums = [sql for sql in three if "SUM(" in sql and "policies_spendentry" in sql and "created_at" in sql]
    assert window_sums == []
    assert SpendEntry.objects.count() == 2 * (3 + 2)
    assert not SpendEntry.objects.exclude(status="settled").exists()


@pytest.mark.django_db(transaction=True)
def test_a_stopping_worker_hands_back_the_step_it_runs_inline(catalog):
    run = bare_run(linear(catalog.project, 2, "pair"), status=RunStatus.RUNNING)
    first, inline = step_of(run, "s0"), step_of(run, "s1")
    # The task's own step has succeeded; it now runs s1, claimed in the same task.
    RunStep.objects.filter(pk=first.pk).update(status=StepStatus.SUCCEEDED, attempt=1)
    later = timezone.now() + timedelta(minutes=5)
    RunStep.objects.filter(pk=inline.pk).update(status=StepStatus.RUNNING, attempt=1, lease_expires_at=later)

    shutdown.hand_back([first.pk], grace=2)

    inline.refresh_from_db()
    assert inline.lease_expires_at < timezone.now() + timedelta(seconds=3)
    (handed,) = RunEvent.objects.filter(run=run, type=EventType.STEP_HANDED_BACK)
    assert handed.step_id == inline.pk
