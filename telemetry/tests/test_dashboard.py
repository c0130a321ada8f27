"""The dashboard on the admin index: counts that link to the filtered lists, the charts' data, only
the projects a staff user holds a role in, and a number of queries that does not grow with runs."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.tests.factories import UserFactory
from policies.tests.factories import PolicyFactory, SpendEntryFactory
from projects.tests.factories import MembershipFactory
from runs.choices import RunStatus, StepStatus
from runs.models import Run, RunStep
from runs.tests.factories import bare_run, make_catalog, make_workflow
from telemetry import histogram, liveness


@pytest.fixture
def stocked(team):
    make_catalog(team.project)
    workflow = make_workflow(team.project)
    now = timezone.now()
    for status in (RunStatus.RUNNING, RunStatus.QUEUED, RunStatus.QUEUED):
        bare_run(workflow, status=status)
    failed = bare_run(workflow, status=RunStatus.FAILED)
    Run.objects.filter(pk=failed.pk).update(
        started_at=now - timedelta(seconds=30), finished_at=now - timedelta(seconds=10)
    )
    old = bare_run(workflow, status=RunStatus.FAILED)  # failed two days ago: not in "last 24 h"
    Run.objects.filter(pk=old.pk).update(finished_at=now - timedelta(days=2))
    waiting = bare_run(workflow, status=RunStatus.WAITING_APPROVAL)
    RunStep.objects.filter(run=waiting, key="a").update(status=StepStatus.WAITING_APPROVAL)
    PolicyFactory(project=team.project, name="Daily cap", config={"amount_usd": 2, "window": "day", "timezone": "UTC"})
    SpendEntryFactory(project=team.project, workflow=workflow, cost_usd=Decimal("0.50"))
    return workflow


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def superuser_client() -> Client:
    return logged_in(UserFactory(is_staff=True, is_superuser=True))


def cards(response) -> dict:
    return {card["key"]: card["n"] for card in response.context["cards"]}


def test_the_index_counts_what_matters_now_and_links_each_count(stocked):
    response = superuser_client().get("/admin/")

    assert response.status_code == 200
    assert cards(response) == {"running": 1, "queued": 2, "held": 0, "waiting": 1, "failed": 1}
    urls = {card["key"]: card["url"] for card in response.context["cards"]}
    assert urls["failed"] == "/admin/runs/run/?status__exact=failed&finished=24h"
    assert urls["waiting"] == "/admin/runs/runstep/?waiting=yes"
    assert superuser_client().get(urls["failed"]).status_code == 200


def test_the_charts_carry_the_weeks_runs_spend_and_budget(stocked):
    response = superuser_client().get("/admin/")

    charts = json.loads(
        response.content.decode().split('id="console-charts" type="application/json">')[1].split("</script>")[0]
    )
    assert sum(sum(series) for series in charts["runs_24h"]["series"].values()) == 6
    assert charts["spend_by_day"]["spent"][-1] == 0.5
    assert charts["spend_by_day"]["budget"] == 2.0
    assert charts["top_workflows"]["labels"] == [stocked.slug]
    assert charts["durations"]["week"]["count"] == 1
    assert charts["durations"]["week"]["p50"] == pytest.approx(20.0, rel=histogram.TOLERANCE)  # from histograms
    assert "Daily cap" in response.text
    assert "chart-4.6.2.umd.min.js" in response.text  # served from our static files, no CDN


def test_one_project_is_shown_with_project_in_the_query(stocked, team):
    response = superuser_client().get("/admin/", {"project": str(team.project.pk)})

    assert response.context["project"] == team.project
    assert all(f"project={team.project.pk}" in card["url"] for card in response.context["cards"])


def test_staff_see_counts_of_their_projects_only(stocked, team):
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_run"))
    MembershipFactory(user=staff, project=team.other_project, role="viewer")

    response = logged_in(staff).get("/admin/")

    assert cards(response) == {"running": 0, "queued": 0, "held": 0, "waiting": 0, "failed": 0}
    assert [p.pk for p in response.context["projects"]] == [team.other_project.pk]
    assert "Daily cap" not in response.text
    hidden = logged_in(staff).get("/admin/", {"project": str(team.project.pk)})
    assert hidden.context["project"] is None  # a project not theirs is not shown


def test_staff_who_may_not_view_runs_get_no_dashboard(stocked, team):
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_agent"))
    MembershipFactory(user=staff, project=team.project, role="owner")

    response = logged_in(staff).get("/admin/")

    assert response.status_code == 200
    assert 'id="console-dashboard"' not in response.text


@override_settings(SPARKOPS_DASHBOARD_CACHE_SECONDS=0)  # every view reads the charts afresh
def test_the_dashboard_costs_the_same_queries_however_many_runs(stocked):
    client = superuser_client()
    client.get("/admin/")
    with CaptureQueriesContext(connection) as few:
        client.get("/admin/")
    for _ in range(20):
        bare_run(stocked, status=RunStatus.SUCCEEDED)
    with CaptureQueriesContext(connection) as many:
        client.get("/admin/")

    assert len(many) == len(few)
    assert len(few) <= 30
    assert not any("COUNT" in q["sql"].upper() and "WHERE" not in q["sql"].upper() for q in many.captured_queries)


def test_worker_and_beat_liveness_are_shown_from_their_heartbeats(stocked):
    liveness.forget()
    quiet = superuser_client().get("/admin/")
    assert {k: v["state"] for k, v in quiet.context["liveness"].items()} == {"worker": "unknown", "beat": "unknown"}
    assert 'data-card="worker"' in quiet.text
    assert "no worker heartbeat recorded yet" in quiet.text

    liveness.beat(liveness.WORKER_KEY, "celery@box")
    liveness.forget()
    beating = superuser_client().get("/admin/")

    assert beating.context["liveness"]["worker"]["state"] == "ok"
    assert beating.context["liveness"]["beat"]["state"] == "unknown"
    assert "heartbeat 0 s ago" in beating.text
    liveness.forget()


def test_the_charts_are_kept_a_minute_and_the_counts_are_not(stocked):
    client = superuser_client()
    client.get("/admin/")
    bare_run(stocked, status=RunStatus.RUNNING)

    again = client.get("/admin/")

    assert cards(again)["running"] == 2  # read afresh
    assert again.context["charts"]["runs_24h"] == client.get("/admin/").context["charts"]["runs_24h"]
    with override_settings(SPARKOPS_DASHBOARD_CACHE_SECONDS=0):
        fresh = client.get("/admin/").context["charts"]["runs_24h"]
    assert sum(sum(series) for series in fresh["series"].values()) == 7
    assert sum(sum(series) for series in again.context["charts"]["runs_24h"]["series"].values()) == 6
