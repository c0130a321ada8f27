"""RunFilterSet: one test per filter, on the filterset itself."""

from datetime import timedelta

import pytest
from django.utils import timezone

from runs import services
from runs.choices import RunStatus, Trigger
from runs.filtersets import RunFilterSet
from runs.models import Run
from sparkops.roles import Role

from .factories import agent_step, bare_run, make_catalog, make_workflow, start


@pytest.fixture
def catalog(team):
    return make_catalog(team.project)


@pytest.fixture
def workflow(catalog):
    return make_workflow(catalog.project)


def runs(**data) -> set:
    filterset = RunFilterSet(data, queryset=Run.objects.all())
    assert filterset.is_valid(), filterset.errors
    return set(filterset.qs)


def test_project(team, workflow):
    make_catalog(team.other_project)
    mine, theirs = bare_run(workflow), bare_run(make_workflow(team.other_project))
    assert runs(project=str(team.project.pk)) == {mine}
    assert runs(project=str(team.other_project.pk)) == {theirs}


def test_workflow(catalog, workflow):
    other = make_workflow(catalog.project, slug="other")
    mine, _ = bare_run(workflow), bare_run(other)
    assert runs(workflow=str(workflow.pk)) == {mine}


def test_workflow_version(catalog, workflow):
    from workflows import services as workflow_services

    one = bare_run(workflow)
    workflow_services.workflow_update(workflow=workflow, user=None, definition={"steps": [agent_step("z")]})
    two = workflow.versions.get(number=2)
    workflow_services.version_publish(version=two)
    later = bare_run(workflow)
    assert runs(workflow_version=str(two.pk)) == {later}
    assert runs(workflow_version=str(one.workflow_version_id)) == {one}


def test_status_takes_several_values(workflow):
    made = {status: bare_run(workflow, status=status) for status in RunStatus.values}
    assert runs(status=["failed", "cancelled"]) == {made["failed"], made["cancelled"]}
    assert runs(status=["waiting_approval"]) == {made["waiting_approval"]}


def test_status_reads_runs_without_distinct(workflow):
    # DISTINCT over every column would sort every matching run at a million rows.
    filterset = RunFilterSet({"status": ["failed", "cancelled"]}, queryset=Run.objects.all())
    assert filterset.is_valid()
    assert not filterset.qs.query.distinct
    assert "DISTINCT" not in str(filterset.qs.query)


def test_status_refuses_an_unknown_value(workflow):
    assert not RunFilterSet({"status": ["nope"]}, queryset=Run.objects.all()).is_valid()


def test_trigger(workflow):
    api, cli = bare_run(workflow, trigger=Trigger.API), bare_run(workflow, trigger=Trigger.CLI)
    assert runs(trigger="cli") == {cli}
    assert runs(trigger="api") == {api}


def test_parent(workflow):
    failed = bare_run(workflow, status=RunStatus.FAILED)
    retry, _ = services.run_retry(run=failed)
    assert runs(parent=str(failed.pk)) == {retry}


def test_queued_after_includes_the_instant_and_queued_before_excludes_it(workflow):
    now = timezone.now()
    old, edge, new = bare_run(workflow), bare_run(workflow), bare_run(workflow)
    Run.objects.filter(pk=old.pk).update(queued_at=now - timedelta(days=2))
    Run.objects.filter(pk=edge.pk).update(queued_at=now - timedelta(days=1))
    cut = (now - timedelta(days=1)).isoformat()

    assert runs(queued_after=cut) == {edge, new}
    assert runs(queued_before=cut) == {old}
    assert runs(queued_after=(now - timedelta(days=3)).isoformat(), queued_before=cut) == {old}


def test_agent_selects_its_tasks(team, catalog, workflow):
    owner = team.members[Role.OWNER]
    writer_task = start(workflow, user=owner, task_agent=catalog.writer)
    start(workflow, user=owner, task_agent=catalog.helper)
    bare_run(workflow)
    assert runs(agent=str(catalog.writer.pk)) == {writer_task}
