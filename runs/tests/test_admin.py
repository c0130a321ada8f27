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
from projects.tests.factories import ProjectFactory
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
    assert [row["step"].key for row in response.context["step_rows"]] == ["a", "b"]
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
    assert f"retried as {retry.short_id}" in response.text


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
    assert step_of(run, "a").status == other.status == StepStatus.QUEUED  # not waiting: left alone
    assert Approval.objects.get().decision == "rejected"


# ------------------------------------------------------------------------------
# Runs that read well, and act in place
# ------------------------------------------------------------------------------
def test_a_run_reads_as_workflow_title_and_short_id(run):
    run.title = "Weekly digest"
    assert str(run) == f"{run.workflow.name} · Weekly digest · {str(run.pk)[:8]}"
    run.title = ""
    assert str(run) == f"{run.workflow.name} · {str(run.pk)[:8]}"


def test_the_run_list_shows_badges_project_cost_and_times_to_the_second(admin_client, workflow):
    done = bare_run(workflow, status=RunStatus.SUCCEEDED)
    Run.objects.filter(pk=done.pk).update(started_at=done.queued_at, finished_at=done.queued_at + timedelta(seconds=2))

    response = admin_client.get(RUNS)

    assert 'class="badge badge-good" data-status="succeeded"' in response.text
    assert f">{workflow.project.name}<" in response.text
    assert timezone.localtime(done.queued_at).strftime("%Y-%m-%d %H:%M:%S") in response.text
    assert "2.0 s" in response.text


def test_the_workflow_filter_names_each_workflow_with_its_project(admin_client, team, workflow, run):
    other = ProjectFactory(name="Other team")
    make_catalog(other)
    twin = make_workflow(other, slug=workflow.slug)  # the same name in another project

    response = admin_client.get(RUNS)

    choices = [
        c["display"]
        for spec in response.context["cl"].filter_specs
        if spec.title == "workflow"
        for c in spec.choices(response.context["cl"])
    ]
    assert f"{team.project.name} · {workflow.name}" in choices
    assert f"Other team · {twin.name}" in choices
    assert len(choices) == len(set(choices))
    by_project = admin_client.get(RUNS, {"project": str(other.pk)})
    assert str(run.pk) not in by_project.text


def test_step_latency_reads_in_milliseconds(admin_client, run):
    RunStep.objects.filter(run=run).update(latency_ms=0.03331300013087457 * 1000)

    response = admin_client.get(STEPS)

    assert "33 ms" in response.text
    assert "0.0333" not in response.text


def test_the_run_page_pages_its_events(admin_client, run):
    from runs.models import RunEvent

    written = RunEvent.objects.filter(run=run).count()  # run.queued, step.queued
    RunEvent.objects.bulk_create(RunEvent(run=run, sequence=n, type="llm.call") for n in range(written + 1, 120))
    first = admin_client.get(f"{RUNS}{run.pk}/change/")
    last = admin_client.get(f"{RUNS}{run.pk}/change/", {"events_page": 3})

    assert [e.sequence for e in first.context["events"]] == list(range(1, 51))
    assert [e.sequence for e in last.context["events"]] == list(range(101, 120))
    assert "page 1 of 3" in first.text


def test_the_run_page_offers_approve_and_reject_to_who_may_decide(admin_client, team, parked):
    page = admin_client.get(f"{RUNS}{parked.pk}/change/")
    assert 'value="approve"' in page.text
    assert 'value="reject"' in page.text

    admin = staff_in(team.project, "admin", "runs.view_run", "runs.change_runstep")
    page = admin.get(f"{RUNS}{parked.pk}/change/")  # this gate names owner
    assert 'value="approve"' not in page.text
    assert "it needs the owner role" in page.text


def test_approving_from_the_run_page_decides_through_the_service(admin_client, superuser, parked):
    response = admin_client.post(
        f"{RUNS}{parked.pk}/steps/gate/decide/", {"decision": "approve", "comment": "fine"}, follow=True
    )

    gate = step_of(parked, "gate")
    assert gate.status == StepStatus.SUCCEEDED
    assert Approval.objects.get(step=gate).comment == "fine"
    assert "Step gate: approved." in response.text


def test_a_decision_below_the_steps_role_is_refused_on_the_run_page(team, parked):
    admin = staff_in(team.project, "admin", "runs.view_run", "runs.change_runstep")

    response = admin.post(f"{RUNS}{parked.pk}/steps/gate/decide/", {"decision": "approve"}, follow=True)

    assert step_of(parked, "gate").status == StepStatus.WAITING_APPROVAL
    assert "needs the owner role" in response.text


def test_cancel_says_what_will_happen_and_acts_only_when_confirmed(eager, admin_client, run):
    confirm = admin_client.get(f"{RUNS}{run.pk}/cancel/")
    assert "No new step will start" in confirm.text
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED

    admin_client.post(f"{RUNS}{run.pk}/cancel/")
    assert Run.objects.get(pk=run.pk).status == RunStatus.CANCELLED


def test_retry_from_the_run_page_starts_a_new_run(admin_client, workflow):
    failed = bare_run(workflow, status=RunStatus.FAILED)
    assert "Steps that succeeded are not run again" in admin_client.get(f"{RUNS}{failed.pk}/retry/").text

    admin_client.post(f"{RUNS}{failed.pk}/retry/")

    assert Run.objects.get(parent=failed).trigger == Trigger.RETRY


def test_a_viewer_is_offered_neither_cancel_nor_retry_and_cannot_post_them(team, run):
    viewer = staff_in(team.project, "viewer", "runs.view_run", "runs.change_run")

    assert 'id="cancel-run"' not in viewer.get(f"{RUNS}{run.pk}/change/").text
    assert viewer.post(f"{RUNS}{run.pk}/cancel/").status_code == 403
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED


def test_the_approvals_inbox_lists_the_waiting_steps(admin_client, parked, run):
    response = admin_client.get(STEPS, {"waiting": "yes"})

    assert str(step_of(parked, "gate").pk) in response.text
    assert f"/admin/runs/runstep/{step_of(run, 'a').pk}/change/" not in response.text


def staff_in(project, role: str, *perms: str) -> Client:
    from django.contrib.auth.models import Permission

    from projects.tests.factories import MembershipFactory

    user = UserFactory(is_staff=True)
    MembershipFactory(user=user, project=project, role=role)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    client = Client()
    client.force_login(user)
    return client
