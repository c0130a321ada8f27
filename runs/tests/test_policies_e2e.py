"""End to end: policies under real concurrency. Real Celery worker processes (4 children) race on
PostgreSQL for a budget's last dollar and for concurrency slots, calling a real local
OpenAI-compatible server. Skipped unless DATABASE_URL is PostgreSQL and REDIS_URL is set."""

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum

from agents.models import ModelPrice
from policies.choices import EntryStatus, Outcome, PolicyAction, PolicyKind, Stage
from policies.models import Policy, PolicyDecision, SpendEntry
from policies.services import policy_save
from projects.models import Project
from projects.tests.factories import ProjectFactory
from runs import services
from runs.choices import RUN_TERMINAL, Decision, EventType, RunStatus, StepStatus
from runs.engine import dispatch
from runs.models import Run, RunEvent, RunStep
from runs.tests.e2e_support import FakeOpenAI, start_workers, stop_workers, worker_logs
from runs.tests.factories import agent_step, approval_step, bare_run, make_workflow, openai_agent
from sparkops.celery import app as celery_app
from sparkops.testing import make_team

pytestmark = [
    pytest.mark.skipif(
        not (settings.DATABASE_URL.startswith("postgres") and settings.REDIS_URL),
        reason="policy races need real worker processes on PostgreSQL and Redis (set DATABASE_URL and REDIS_URL)",
    ),
    pytest.mark.django_db(transaction=True),
]

# What holds a concurrency slot.
ACTIVE = (RunStatus.RUNNING, RunStatus.WAITING_APPROVAL, RunStatus.CANCELLING)


@pytest.fixture(scope="module")
def fake():
    server = FakeOpenAI()
    yield server
    server.stop()


@pytest.fixture
def workers(django_db_setup, tmp_path):
    """Call with a number of worker processes (2 children each) to start them side by side."""
    celery_app.control.purge()  # messages other tests left for rows that no longer exist
    started = []

    def start(count: int) -> list:
        started.extend(start_workers(tmp_path, count))
        return started

    yield start
    stop_workers(started)


def start_at_once(workflow, count: int, **fields) -> list:
    """``count`` runs started by 8 threads at once, each on its own database connection."""

    def one(_) -> object:
        try:
            run, _ = services.run_start(workflow=workflow, inputs={}, **fields)
            return run.pk
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(count)))


def wait_until_finished(run_ids: list, workers: list, timeout: float = 120) -> list[Run]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Run.objects.filter(pk__in=run_ids).exclude(status__in=RUN_TERMINAL).exists():
            return list(Run.objects.filter(pk__in=run_ids))
        time.sleep(0.1)
    counts = Counter(Run.objects.filter(pk__in=run_ids).values_list("status", flat=True))
    raise AssertionError(f"runs still unfinished after {timeout} s: {dict(counts)}\n{worker_logs(workers)}")


# ------------------------------------------------------------------------------
# A $1.00 budget, 50 runs of $0.05 calls
# ------------------------------------------------------------------------------
def priced_at_five_cents(project, base_url: str):
    """An agent whose every call costs $0.05 and is estimated at $0.05: input is free, and both
    the fake's 20 completion tokens and the agent's max_tokens of 20 cost $2500 per million."""
    ModelPrice.objects.create(
        provider="openai",
        model="local-model",
        input_usd_per_mtok=Decimal(0),
        output_usd_per_mtok=Decimal(2500),
        effective_from=datetime(2025, 1, 1, tzinfo=UTC),
    )
    return openai_agent(project, base_url, slug="remote", parameters={"max_tokens": 20})


def test_fifty_runs_at_once_spend_at_most_the_budget_and_call_nothing_once_it_is_gone(workers, fake):
    project = ProjectFactory()
    priced_at_five_cents(project, fake.base_url)
    budget = policy_save(
        policy=Policy(
            project=project,
            name="Daily dollar",
            kind=PolicyKind.BUDGET,
            config={"amount_usd": 1, "window": "day", "timezone": "UTC"},
            action=PolicyAction.BLOCK,
        )
    )
    prompt = "race for the last dollar"
    workflow = make_workflow(project, agent_step("ask", agent="remote", prompt=prompt), slug="race", schema={})

    # All 50 are admitted (nothing is spent yet); their advances wait in Redis for the workers.
    run_ids = start_at_once(workflow, 50)
    runs = wait_until_finished(run_ids, workers(2))

    by_status = Counter(run.status for run in runs)
    assert by_status == {RunStatus.SUCCEEDED: 20, RunStatus.FAILED: 30}
    for run in runs:
        if run.status == RunStatus.FAILED:
            assert run.error["type"] == "PolicyBlocked", run.error
            assert "'Daily dollar'" in run.error["message"]
    entries = SpendEntry.objects.filter(project=project)
    assert set(entries.values_list("status", flat=True)) == {EntryStatus.SETTLED}  # nothing left reserved
    assert set(entries.values_list("reserved_usd", "cost_usd")) == {(Decimal("0.05"), Decimal("0.05"))}
    ledger = entries.aggregate(total=Sum("cost_usd"))["total"]
    assert ledger == Run.objects.filter(pk__in=run_ids).aggregate(total=Sum("cost_usd"))["total"]
    assert ledger == Decimal("1.00")
    # The provider was called once per ledger entry: no call went out once the dollar was gone.
    assert fake.prompts[prompt] == entries.count() == 20
    blocked = RunStep.objects.filter(run_id__in=run_ids, status=StepStatus.FAILED)
    decisions = PolicyDecision.objects.filter(project=project, outcome=Outcome.BLOCKED)
    assert sorted(decisions.values_list("step_id", flat=True)) == sorted(blocked.values_list("pk", flat=True))
    assert set(decisions.values_list("policy_id", "stage")) == {(budget.pk, Stage.CALL)}


# ------------------------------------------------------------------------------
# A concurrency limit of 2, 10 slow runs
# ------------------------------------------------------------------------------
class ActivePeak(threading.Thread):
    """Counts a project's runs that hold a slot every 20 ms, on its own database connection."""

    def __init__(self, project_id) -> None:
        super().__init__(daemon=True)
        self.project_id = project_id
        self.peak = 0
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        try:
            while not self.done.is_set():
                active = Run.objects.filter(project_id=self.project_id, status__in=ACTIVE).count()
                self.peak = max(self.peak, active)
                self.samples += 1
                self.done.wait(0.02)
        finally:
            connection.close()

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)


def most_at_once(runs: list[Run]) -> int:
    """The most runs between their start and their end at any instant. A run takes a slot only
    after the run that freed it wrote its end time, so these intervals never overlap by accident."""
    edges = sorted([(run.started_at, 1) for run in runs] + [(run.finished_at, -1) for run in runs])
    active = peak = 0
    for _, change in edges:  # at equal times an end (-1) sorts before a start
        active += change
        peak = max(peak, active)
    return peak


def handover_delays(runs: list[Run], limit: int) -> list[float]:
    """Seconds from a slot freeing to the next run starting: the k-th start (k > limit) waits for
    the (k - limit)-th end."""
    starts = sorted(run.started_at for run in runs)
    ends = sorted(run.finished_at for run in runs)
    return [(starts[k] - ends[k - limit]).total_seconds() for k in range(limit, len(starts))]


def queue_key(run: Run) -> tuple:
    return (-run.priority, run.queued_at, str(run.pk))


def test_a_concurrency_limit_of_two_runs_ten_runs_two_at_a_time_in_queue_order(workers, fake):
    project = ProjectFactory()
    openai_agent(project, fake.base_url, slug="slow")
    limit = policy_save(
        policy=Policy(
            project=project,
            name="Two at a time",
            kind=PolicyKind.CONCURRENCY,
            config={"max_active": 2},
            action=PolicyAction.BLOCK,
        )
    )
    step = agent_step("think", agent="slow", prompt="SLOW=0.5 think")
    workflow = make_workflow(project, step, slug="slow", schema={})
    # Eight ordinary runs, then two urgent ones queued after them; the workers find all ten waiting.
    low = start_at_once(workflow, 8)
    high = start_at_once(workflow, 2, priority=5)
    peak = ActivePeak(project.pk)
    peak.start()
    try:
        runs = wait_until_finished(low + high, workers(2), timeout=60)
    finally:
        peak.stop()

    assert {run.status for run in runs} == {RunStatus.SUCCEEDED}
    assert peak.samples > 50
    assert peak.peak <= 2
    assert most_at_once(runs) == 2
    # The urgent runs went first although queued last; then the rest in queue order, give or
    # take a pair whose slots freed together (a run may start once at most one is ahead of it).
    first_low_start = min(run.started_at for run in runs if run.pk in low)
    assert all(run.started_at < first_low_start for run in runs if run.pk in high)
    for run in runs:
        overtaken = [o for o in runs if queue_key(o) < queue_key(run) and o.started_at > run.started_at]
        assert len(overtaken) <= 1, (run.pk, overtaken)
    # Every ordinary run was held once, with a reason; a freed slot was taken at once, not by the
    # reaper (every 30 s, and not running here).
    held_events = RunEvent.objects.filter(run_id__in=low + high, type=EventType.RUN_HELD)
    held = Counter(held_events.values_list("run_id", flat=True))
    assert held == dict.fromkeys(low, 1)
    queued = PolicyDecision.objects.filter(policy=limit, outcome=Outcome.QUEUED)
    assert sorted(queued.values_list("run_id", flat=True)) == sorted(low)
    assert max(handover_delays(runs, 2)) < 3, handover_delays(runs, 2)


# ------------------------------------------------------------------------------
# A run held at the very moment the slot frees
# ------------------------------------------------------------------------------
def waiting_for_locks() -> int:
    """Connections to the test database blocked on a lock."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def eventually(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


class ProjectLock(threading.Thread):
    """Holds the project row FOR UPDATE on its own connection until released. Transactions that
    wrote rows pointing at the project then wait at COMMIT (the foreign keys are checked there)."""

    def __init__(self, project_id) -> None:
        super().__init__(daemon=True)
        self.project_id = project_id
        self.taken, self.released = threading.Event(), threading.Event()

    def run(self) -> None:
        try:
            with transaction.atomic():
                Project.objects.select_for_update().get(pk=self.project_id)
                self.taken.set()
                self.released.wait(30)
        finally:
            connection.close()

    def release(self) -> None:
        self.released.set()
        self.join(timeout=10)


def test_a_run_held_just_as_the_only_slot_frees_still_gets_it(workers):
    team = make_team()
    project = team.project
    policy_save(
        policy=Policy(
            project=project,
            name="One at a time",
            kind=PolicyKind.CONCURRENCY,
            config={"max_active": 1},
            action=PolicyAction.BLOCK,
        )
    )
    # Two workflows: advances of runs of one version also queue on its row, which hides the race.
    first = make_workflow(project, approval_step("gate"), slug="first", schema={})
    second = make_workflow(project, approval_step("gate"), slug="second", schema={})
    running = workers(1)
    holder, _ = services.run_start(workflow=first, inputs={})
    assert eventually(lambda: Run.objects.get(pk=holder.pk).status == RunStatus.WAITING_APPROVAL, 20)
    latecomer = bare_run(second, inputs={})  # queued; its advance is sent below

    # The latecomer's advance sees the slot taken and holds it, but cannot commit yet...
    lock = ProjectLock(project.pk)
    lock.start()
    try:
        assert lock.taken.wait(5)
        dispatch.advance_now(latecomer.pk)
        assert eventually(lambda: waiting_for_locks() == 1, 10), worker_logs(running)
        # ...while the holder ends and hands its slot on.
        holder.refresh_from_db()
        owner = team.members["owner"]
        services.step_decide(run=holder, key="gate", user=owner, role="owner", decision=Decision.APPROVED)
        assert eventually(lambda: waiting_for_locks() == 2 or Run.objects.get(pk=holder.pk).finished_at, 10)
    finally:
        lock.release()

    # No reaper runs here: only the hand-over can start the latecomer.
    assert eventually(lambda: Run.objects.get(pk=latecomer.pk).status != RunStatus.QUEUED, 10), worker_logs(running)
    assert Run.objects.get(pk=holder.pk).status == RunStatus.SUCCEEDED
    assert RunEvent.objects.filter(run=latecomer, type=EventType.RUN_HELD).exists()
