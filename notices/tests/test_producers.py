"""Each notice type is produced once by its real cause, in the cause's transaction: runs that end,
an approval gate, a policy that blocks (a call, a start), a schedule paused by a person or by its
failures, a budget crossing 50/80/100% once per window."""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from notices.choices import NoticeType
from notices.models import BudgetCrossing, Notice
from notices.services import notices_for_budgets
from policies.choices import EntryStatus, PolicyAction, PolicyKind
from policies.exceptions import PolicyRefused
from policies.services import Call, call_verdict, spend_settle
from policies.tests.factories import PolicyFactory, SpendEntryFactory
from runs.choices import Decision, RunStatus
from runs.models import Run
from runs.services import step_decide
from runs.tests.factories import agent_step, approval_step, make_workflow, start, stocked, tool_step
from schedules import services as schedule_services
from schedules.models import Schedule
from schedules.tests.factories import published_workflow
from sparkops.roles import Role

ON_POSTGRESQL = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
SLOT = datetime(2026, 5, 4, 8, tzinfo=UTC)


def kinds(**filters) -> list[str]:
    return list(Notice.objects.filter(**filters).order_by("id").values_list("type", flat=True))


@pytest.fixture
def project(engine, team):
    return stocked(team.project)


def budget(project, amount: str, action=PolicyAction.BLOCK, **config) -> object:
    config = {"amount_usd": amount, "window": "day", **config}
    return PolicyFactory(project=project, kind=PolicyKind.BUDGET, config=config, action=action, name="Daily")


def spent(project, usd: str) -> None:
    """Spend recorded as the engine records it: a call by the writer agent, reserved under the
    project's budgets (which tells their thresholds), then settled at its estimate."""
    writer = project.agents.get(slug="writer")
    call = Call(project_id=project.pk, run_id=None, step_id=None, attempt=1, agent=writer,
                provider=writer.provider, model=writer.model, estimate_usd=Decimal(usd))  # fmt: skip
    verdict = call_verdict(call)
    assert verdict.allowed, verdict.hit
    spend_settle(call=call, entry_id=verdict.entry_id, input_tokens=0, output_tokens=0, cost=Decimal(usd), price=None)


# ------------------------------------------------------------------------------
# Runs
# ------------------------------------------------------------------------------
def test_a_succeeded_run_is_told_once_with_its_cost_tokens_and_links(project):
    run = start(make_workflow(project, agent_step("a"), slug="digest"))

    assert kinds() == [NoticeType.RUN_SUCCEEDED]
    notice = Notice.objects.get()
    assert notice.run_id == run.pk
    payload = notice.payload["run"]
    assert (payload["id"], payload["status"], payload["workflow"]["slug"]) == (str(run.pk), "succeeded", "digest")
    assert Decimal(payload["cost_usd"]) == run.cost_usd > 0
    assert payload["input_tokens"] == run.input_tokens > 0
    assert notice.payload["links"]["admin"] == f"http://localhost:8000/admin/runs/run/{run.pk}/change/"


def test_a_failed_run_is_told_once_with_its_error(project):
    run = start(make_workflow(project, tool_step("calc", "1/0"), schema={}), {})

    assert run.status == RunStatus.FAILED
    assert kinds() == [NoticeType.RUN_FAILED]
    assert Notice.objects.get().payload["run"]["error"]["step"] == "calc"


def test_a_cancelled_run_is_told_once(project, team):
    run = start(make_workflow(project, approval_step("gate"), schema={}))
    response = team.client(Role.DEVELOPER).post(f"/api/v1/runs/{run.pk}/cancel")

    assert response.status_code == 200, response.content
    assert kinds() == [NoticeType.STEP_WAITING_APPROVAL, NoticeType.RUN_CANCELLED]


def test_an_approval_gate_tells_once_that_it_waits_then_the_run_ends(project, team):
    run = start(make_workflow(project, approval_step("gate"), schema={}))

    assert kinds() == [NoticeType.STEP_WAITING_APPROVAL]
    waiting = Notice.objects.get()
    assert (waiting.step.key, waiting.payload["step"]["key"], waiting.run_id) == ("gate", "gate", run.pk)

    step_decide(run=run, key="gate", user=team.members[Role.ADMIN], role=Role.ADMIN, decision=Decision.APPROVED)
    assert kinds() == [NoticeType.STEP_WAITING_APPROVAL, NoticeType.RUN_SUCCEEDED]


# ------------------------------------------------------------------------------
# Policies
# ------------------------------------------------------------------------------
def test_a_policy_blocking_a_call_is_told_once_with_the_policy_and_the_run(project):
    daily = budget(project, "0.005")

    run = start(make_workflow(project, agent_step("a")))

    assert kinds() == [NoticeType.POLICY_BLOCKED, NoticeType.RUN_FAILED]
    blocked = Notice.objects.get(type=NoticeType.POLICY_BLOCKED)
    assert blocked.payload["policy"]["id"] == daily.pk
    assert blocked.payload["policy"]["name"] == "Daily"
    assert "Daily" in blocked.payload["policy"]["reason"]
    assert (blocked.run_id, blocked.step.key) == (run.pk, "a")


def test_a_refused_start_is_told_once_though_the_run_never_existed(project):
    spent(project, "0.02")
    budget(project, "0.01")
    workflow = make_workflow(project, agent_step("a"))

    for _ in range(2):  # a client retrying: the refusal is recorded (and told) once per 10 s
        with pytest.raises(PolicyRefused):
            start(workflow)

    assert Run.objects.count() == 0
    assert kinds() == [NoticeType.POLICY_BLOCKED]
    notice = Notice.objects.get()
    assert (notice.run_id, notice.payload["policy"]["stage"]) == (None, "admission")


# ------------------------------------------------------------------------------
# Budgets: 50, 80 and 100%, once per window
# ------------------------------------------------------------------------------
def test_budget_thresholds_are_told_once_each_per_window(project):
    daily = budget(project, "1.00", action=PolicyAction.WARN)
    workflow = make_workflow(project, agent_step("a"))

    spent(project, "0.495")
    start(workflow)  # reserves ~$0.0082: 50.3% used
    start(workflow)  # still past 50%: nothing new
    assert [n.payload["threshold_percent"] for n in Notice.objects.filter(type=NoticeType.BUDGET_THRESHOLD)] == [50]

    spent(project, "0.51")
    start(workflow)  # past 100% at once: 80 and 100 are told, each once
    start(workflow)

    crossed = Notice.objects.filter(type=NoticeType.BUDGET_THRESHOLD).order_by("id")
    assert [n.payload["threshold_percent"] for n in crossed] == [50, 80, 100]
    assert {n.payload["policy"]["id"] for n in crossed} == {daily.pk}
    assert crossed[0].payload["amount_usd"] == "1.00"
    assert BudgetCrossing.objects.count() == 3


def test_the_threshold_check_reuses_what_the_budget_read_before_the_call(project):
    """A call under a budget reads the window's running total, under its lock, to judge the call;
    its thresholds are checked from that reading plus the call's reservation, not by summing."""
    budget(project, "1.00", action=PolicyAction.WARN)
    spent(project, "0.495")
    workflow = make_workflow(project, agent_step("a"))

    with CaptureQueriesContext(connection) as queries:
        start(workflow)  # reserves ~$0.0082: 50.3% used

    window_sums = [q["sql"] for q in queries.captured_queries if "SUM(" in q["sql"] and "spendentry" in q["sql"]]
    assert window_sums == []  # the run's admission and its call read the window's running total
    (told,) = Notice.objects.filter(type=NoticeType.BUDGET_THRESHOLD)
    assert told.payload["threshold_percent"] == 50
    assert Decimal(told.payload["used_usd"]) == Decimal(told.payload["spent_usd"]) + Decimal(
        told.payload["reserved_usd"]
    )
    assert Decimal("0.495") < Decimal(told.payload["used_usd"]) < Decimal("0.51")


def test_a_new_window_reports_its_thresholds_again(project, time_machine):
    budget(project, "0.01", action=PolicyAction.WARN)
    workflow = make_workflow(project, agent_step("a"))
    time_machine.move_to(SLOT, tick=False)
    start(workflow)  # an $0.0082 reservation of $0.01: 82%
    time_machine.move_to(SLOT + timedelta(days=1), tick=False)
    start(workflow)

    thresholds = Notice.objects.filter(type=NoticeType.BUDGET_THRESHOLD).values_list("payload__threshold_percent")
    assert sorted(t for (t,) in thresholds) == [50, 50, 80, 80]


@pytest.mark.skipif(not ON_POSTGRESQL, reason="SQLite runs one writer at a time: no race to lose")
def test_two_reservations_at_once_tell_a_threshold_once(transactional_db, team):
    daily = budget(team.project, "1.00")
    SpendEntryFactory(project=team.project, status=EntryStatus.SETTLED, cost_usd=Decimal("0.9"))
    barrier, errors = threading.Barrier(4), []

    def reserve() -> None:
        try:
            with transaction.atomic():
                barrier.wait(timeout=10)
                notices_for_budgets(project_id=team.project.pk, budgets=[daily])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=reserve) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    thresholds = Notice.objects.filter(type=NoticeType.BUDGET_THRESHOLD).values_list("payload__threshold_percent")
    assert sorted(t for (t,) in thresholds) == [50, 80]


# ------------------------------------------------------------------------------
# Schedules
# ------------------------------------------------------------------------------
@pytest.fixture
def schedule(team):
    workflow = published_workflow(team.project)
    row = Schedule(project=team.project, workflow=workflow, name="Digest", cron="0 * * * *", inputs={"topic": "x"})
    return schedule_services.schedule_save(schedule=row)


def test_a_person_pausing_a_schedule_is_told_once(team, schedule):
    client = team.client(Role.ADMIN)
    for _ in range(2):
        assert client.post(f"/api/v1/schedules/{schedule.pk}/pause").status_code == 200

    assert kinds() == [NoticeType.SCHEDULE_PAUSED]
    notice = Notice.objects.get()
    assert (str(notice.schedule_id), notice.payload["automatic"], notice.payload["reason"]) == (
        str(schedule.pk),
        False,
        "Paused by a person.",
    )


def test_a_bulk_pause_tells_only_of_the_schedules_that_were_running(team, schedule):
    schedule_services.schedules_set_enabled(queryset=Schedule.objects.all(), enabled=False)
    schedule_services.schedules_set_enabled(queryset=Schedule.objects.all(), enabled=False)

    assert kinds(schedule=schedule) == [NoticeType.SCHEDULE_PAUSED]


def test_a_schedule_paused_by_its_failures_is_told_once(team, time_machine):
    time_machine.move_to(SLOT - timedelta(minutes=10), tick=False)
    workflow = published_workflow(team.project)
    row = Schedule(
        project=team.project,
        workflow=workflow,
        name="Digest",
        cron="0 * * * *",
        inputs={"topic": "x"},
        auto_pause_after=1,
    )
    schedule = schedule_services.schedule_save(schedule=row)
    time_machine.move_to(SLOT, tick=False)
    fire = schedule_services.fire(schedule_id=schedule.pk, now=SLOT)
    Run.objects.filter(pk=fire.run_id).update(status=RunStatus.FAILED)

    time_machine.move_to(SLOT + timedelta(hours=1), tick=False)
    schedule_services.fire(schedule_id=schedule.pk, now=SLOT + timedelta(hours=1))
    schedule_services.fire(schedule_id=schedule.pk, now=SLOT + timedelta(hours=2))

    assert kinds(type=NoticeType.SCHEDULE_PAUSED) == [NoticeType.SCHEDULE_PAUSED]
    notice = Notice.objects.get(type=NoticeType.SCHEDULE_PAUSED)
    assert notice.payload["automatic"] is True
    assert notice.payload["reason"] == "Paused after 1 failed runs in a row."
