"""The runs admin: pages open for a superuser, engine-owned rows are read-only, and the actions
(cancel, retry, approve, reject) go through the same services as the API."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.tests.factories import UserFactory
from runs.choices import RunStatus, StepStatus, Trigger
from runs.models import Approval, Run, RunStep

from .factories import approval_step, bare_run, make_catalog, make_workflow, start, statuses, step_of

RUNS = "/admin/runs/run/"
STEPS = "/admin/runs/runstep/"


@pytest.fixture
def superuser(db):
    return UserFactory(is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client(superuser) -> Client:
    client = Client()
    client.force_login(superuser)
    return client


@pytest.fixture
def eager():
    """Tasks enqueued right away (the cancel's advance) run in the test's thread."""
    from sparkops.celery import app

    app.conf.task_always_eager = app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager = app.conf.task_eager_propagates = False


@pytest.fixture
def catalog(team):
    return make_catalog(team.project)


@pytest.fixture
def workflow(catalog):
    return make_workflow(catalog.project)


@pytest.fixture
def run(workflow) -> Run:
    return start(workflow)


def act(client: Client, url: str, action: str, *objects):
    return client.post(url, {"action": action, "_selected_action": [str(o.pk) for o in objects]}, follow=True)


# ------------------------------------------------------------------------------
# Pages
# ------------------------------------------------------------------------------
def test_the_run_list_opens_with_a_filter_and_a_recent_window(admin_client, workflow, run):
    failed = bare_run(workflow, status=RunStatus.FAILED)
    old = bare_run(workflow, status=RunStatus.FAILED)
    Run.objects.filter(pk=old.pk).update(queued_at=timezone.now() - timedelta(days=40))

    every = admin_client.get(RUNS)
    only_failed = admin_client.get(RUNS, {"status__exact": "failed", "queued_within": "30d"})

    assert every.status_code == 200
    assert {str(run.pk), str(failed.pk), str(old.pk)} <= set(_linked_ids(every.text))
    assert only_failed.status_code == 200
    assert str(failed.pk) in only_failed.text
    assert str(run.pk) not in only_failed.text
    assert str(old.pk) not in only_failed.text


def _linked_ids(html: str) -> list[str]:
    return re.findall(r"/admin/runs/run/([0-9a-f-]{36})/change/", html)


def test_the_run_list_pages_without_counting_or_reading_the_date_range(admin_client, workflow, monkeypatch):
    from runs.admin import RunAdmin

    monkeypatch.setattr(RunAdmin, "list_per_page", 2)
    made = [bare_run(workflow) for _ in range(3)]
    for n, run in enumerate(made):  # newest first: made[2], made[1], made[0]
        Run.objects.filter(pk=run.pk).update(queued_at=timezone.now() - timedelta(minutes=3 - n))

    with CaptureQueriesContext(connection) as queries:
        first = admin_client.get(RUNS)
    second = admin_client.get(RUNS, {"p": 2})

    sql = " ".join(q["sql"].upper() for q in queries.captured_queries)
    assert not re.search(r"\b(COUNT|MIN|MAX)\(", sql)
    assert _linked_ids(first.text) == [str(made[2].pk), str(made[1].pk)]
    assert "?p=2" in first.text  # a link to the next page
    assert _linked_ids(second.text) == [str(made[0].pk)]


@pytest.mark.parametrize("url", [RUNS, STEPS])
def test_the_admin_search_takes_an_id_or_any_text(admin_client, run, url):
    by_id = admin_client.get(url, {"q": str(run.pk)})
    assert by_id.status_code == 200
    assert str(run.pk) in by_id.text
    assert admin_client.get(url, {"q": "weekly digest"}).status_code == 200


def test_a_run_page_shows_its_steps_and_events_read_only(admin_client, run):
    response = admin_client.get(f"{RUNS}{run.pk}/change/")

    assert response.status_code == 200
    inlines = [formset.opts.model.__name__ for formset in response.context["inline_admin_formsets"]]
    assert inlines == ["RunStep", "RunEvent"]
    assert "run.queued" in response.text
    assert response.context["has_change_permission"] is False


def test_the_step_and_approval_lists_open(admin_client, run):
    assert admin_client.get(STEPS).status_code == 200
    assert admin_client.get(f"{STEPS}{step_of(run, 'a').pk}/change/").status_code == 200
    assert admin_client.get("/admin/runs/approval/").status_code == 200


def test_runs_cannot_be_added_or_edited_in_the_admin(admin_client, run):
    assert admin_client.get(f"{RUNS}add/").status_code == 403
    admin_client.post(f"{RUNS}{run.pk}/change/", {"status": "succeeded"})
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED


# ------------------------------------------------------------------------------
# Actions
# ------------------------------------------------------------------------------
def test_the_cancel_action_cancels_through_the_service(eager, admin_client, workflow, run):
    done = bare_run(workflow, status=RunStatus.SUCCEEDED)

    response = act(admin_client, RUNS, "cancel", run, done)

    assert response.status_code == 200
    assert Run.objects.get(pk=run.pk).status == RunStatus.CANCELLED
    assert set(statuses(run).values()) == {StepStatus.CANCELLED}
    assert Run.objects.get(pk=done.pk).status == RunStatus.SUCCEEDED  # refused, with a warning
    assert "Cancelling 1 run(s)." in response.text
    assert "Cannot cancel a run that is succeeded" in response.text


def test_the_retry_action_retries_through_the_service(admin_client, superuser, workflow, run):
    failed = bare_run(workflow, status=RunStatus.FAILED)

    response = act(admin_client, RUNS, "retry", failed, run)

    assert response.status_code == 200
    retry = Run.objects.get(parent=failed)
    assert (retry.trigger, retry.created_by, retry.status) == (Trigger.RETRY, superuser, RunStatus.QUEUED)
    assert not Run.objects.filter(parent=run).exists()  # a queued run is not retried
    assert f"retried as {retry.pk}" in response.text


@pytest.fixture
def parked(catalog) -> Run:
    run = start(make_workflow(catalog.project, approval_step("gate", role="owner"), slug="gated"))
    RunStep.objects.filter(run=run, key="gate").update(status=StepStatus.WAITING_APPROVAL)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.WAITING_APPROVAL)
    return run


def test_the_approve_action_decides_a_waiting_step(admin_client, superuser, parked):
    gate = step_of(parked, "gate")

    response = act(admin_client, STEPS, "approve", gate)

    assert response.status_code == 200
    gate.refresh_from_db()
    assert gate.status == StepStatus.SUCCEEDED
    assert gate.output["by"] == superuser.email
    approval = Approval.objects.get(step=gate)
    assert (approval.decision, approval.decided_by) == ("approved", superuser)


def test_the_reject_action_fails_a_waiting_step_and_skips_others(admin_client, parked, run):
    gate, other = step_of(parked, "gate"), step_of(run, "a")

    act(admin_client, STEPS, "reject", gate, other)

    assert step_of(parked, "gate").status == StepStatus.FAILED
    assert step_of(run, "a").status == StepStatus.PENDING
    assert Approval.objects.get().decision == "rejected"
