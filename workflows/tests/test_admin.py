"""The admin: pages open, edits go through the services (a new definition adds a version, errors
show on the form), and versions stay read-only."""

import json

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from accounts.tests.factories import UserFactory
from projects.tests.factories import ProjectFactory
from workflows import services
from workflows.models import Workflow, WorkflowVersion
from workflows.tests.factories import INPUT_SCHEMA, catalog_for, definition, tool_step


@pytest.fixture
def superuser(db):
    return UserFactory(is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client(superuser) -> Client:
    client = Client()
    client.force_login(superuser)
    return client


@pytest.fixture
def project(db):
    project = ProjectFactory()
    catalog_for(project)
    return project


@pytest.fixture
def workflow(project) -> Workflow:
    return services.workflow_create(
        project=project,
        user=None,
        name="Triage",
        slug="triage",
        definition=definition(),
        input_schema=INPUT_SCHEMA,
        publish=True,
    )


def change_url(workflow) -> str:
    return reverse("admin:workflows_workflow_change", args=[workflow.pk])


def form_data(workflow=None, **changes) -> dict:
    """The change (or add) form as a browser posts it, with the read-only versions inline."""
    count = workflow.versions.count() if workflow else 0
    data = {
        "name": workflow.name if workflow else "Research",
        "slug": workflow.slug if workflow else "research",
        "description": "",
        "active": "on",
        "definition": json.dumps(workflow.latest_version.definition if workflow else definition()),
        "input_schema": json.dumps(workflow.latest_version.input_schema if workflow else INPUT_SCHEMA),
        "versions-TOTAL_FORMS": count,
        "versions-INITIAL_FORMS": count,
        "versions-MIN_NUM_FORMS": 0,
        "versions-MAX_NUM_FORMS": 0,
    }
    for i, version in enumerate(workflow.versions.order_by("-number") if workflow else []):
        data |= {f"versions-{i}-id": version.pk, f"versions-{i}-workflow": workflow.pk}
    return data | changes


def form_errors(response) -> dict:
    assert response.status_code == 200  # the form again, with its errors
    return response.context["adminform"].form.errors


# ------------------------------------------------------------------------------
# Workflows
# ------------------------------------------------------------------------------
def test_the_changelist_opens_and_shows_the_latest_version(admin_client, workflow, django_assert_max_num_queries):
    services.workflow_update(workflow=workflow, user=None, definition=definition(tool_step("fetch")))
    with django_assert_max_num_queries(12):
        response = admin_client.get(reverse("admin:workflows_workflow_changelist"))
    assert response.status_code == 200
    (row,) = response.context["cl"].result_list
    assert row == workflow
    assert row.latest_version.number == 2


@pytest.mark.parametrize(
    ("params", "expected"), [({"q": "tria"}, 1), ({"q": "nothing"}, 0), ({"active__exact": "0"}, 0)]
)
def test_the_changelist_searches_and_filters(admin_client, workflow, params, expected):
    response = admin_client.get(reverse("admin:workflows_workflow_changelist"), params)
    assert len(response.context["cl"].result_list) == expected


def test_the_change_page_shows_the_newest_definition_and_the_versions_read_only(admin_client, workflow):
    response = admin_client.get(change_url(workflow))
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form["definition"].initial == definition()
    assert "project" not in form.fields  # a workflow never moves between projects
    (inline,) = response.context["inline_admin_formsets"]
    assert [f.instance.number for f in inline.formset.initial_forms] == [1]
    assert not inline.has_add_permission
    assert not inline.has_change_permission
    assert not inline.has_delete_permission


def test_adding_a_workflow_goes_through_the_service_and_makes_version_1(admin_client, superuser, project):
    response = admin_client.post(reverse("admin:workflows_workflow_add"), form_data(project=project.pk))
    assert response.status_code == 302, form_errors(response)
    workflow = Workflow.objects.get(slug="research")
    version = workflow.versions.get()
    assert (workflow.project, version.number, version.created_by) == (project, 1, superuser)
    assert (version.definition, version.input_schema) == (definition(), INPUT_SCHEMA)


def test_adding_needs_a_definition(admin_client, project):
    response = admin_client.post(reverse("admin:workflows_workflow_add"), form_data(project=project.pk, definition=""))
    assert "definition" in form_errors(response)
    assert not Workflow.objects.exists()


def test_adding_with_an_invalid_definition_shows_step_errors_on_the_field(admin_client, project):
    bad = json.dumps(definition(tool_step("fetch", depends_on=["nope"])))
    response = admin_client.post(reverse("admin:workflows_workflow_add"), form_data(project=project.pk, definition=bad))
    assert form_errors(response) == {"definition": ["steps > fetch: depends_on: unknown step 'nope'."]}
    assert "unknown step &#x27;nope&#x27;" in response.content.decode()
    assert not Workflow.objects.exists()


def test_a_changed_definition_adds_a_version_and_keeps_the_published_one(admin_client, superuser, workflow):
    new = definition(tool_step("fetch", timeout_seconds=9))
    response = admin_client.post(change_url(workflow), form_data(workflow, definition=json.dumps(new)))
    assert response.status_code == 302, form_errors(response)
    assert list(workflow.versions.values_list("number", "published")) == [(1, True), (2, False)]
    latest = workflow.versions.get(number=2)
    assert (latest.definition, latest.created_by) == (new, superuser)
    assert workflow.versions.get(number=1).definition == definition()


def test_changing_only_the_name_adds_no_version(admin_client, workflow):
    response = admin_client.post(change_url(workflow), form_data(workflow, name="Renamed"))
    assert response.status_code == 302, form_errors(response)
    assert Workflow.objects.get(pk=workflow.pk).name == "Renamed"
    assert workflow.versions.count() == 1


def test_an_empty_definition_box_keeps_the_newest_definition(admin_client, workflow):
    response = admin_client.post(change_url(workflow), form_data(workflow, definition="", input_schema=""))
    assert response.status_code == 302, form_errors(response)
    assert workflow.versions.count() == 1


def test_an_invalid_edit_shows_its_errors_on_the_form_and_changes_nothing(admin_client, workflow):
    data = form_data(workflow, name="Renamed", input_schema=json.dumps({"type": "object"}))
    errors = form_errors(admin_client.post(change_url(workflow), data))
    assert errors == {
        "definition": ["steps > fetch: input.q: unknown input 'topic'; the input schema's properties are: none."]
    }
    assert Workflow.objects.get(pk=workflow.pk).name == "Triage"
    assert workflow.versions.count() == 1


def test_json_that_does_not_parse_is_a_field_error(admin_client, workflow):
    assert "definition" in form_errors(admin_client.post(change_url(workflow), form_data(workflow, definition="{")))


def test_a_taken_slug_is_a_field_error(admin_client, workflow, project):
    data = form_data(project=project.pk, slug="triage")
    assert "slug" in form_errors(admin_client.post(reverse("admin:workflows_workflow_add"), data))
    assert Workflow.objects.count() == 1


# ------------------------------------------------------------------------------
# Versions
# ------------------------------------------------------------------------------
def test_the_version_changelist_and_page_open_read_only(admin_client, workflow):
    version = workflow.versions.get()
    assert admin_client.get(reverse("admin:workflows_workflowversion_changelist")).status_code == 200
    response = admin_client.get(reverse("admin:workflows_workflowversion_change", args=[version.pk]))
    assert response.status_code == 200
    assert not response.context["has_change_permission"]
    assert admin_client.get(reverse("admin:workflows_workflowversion_add")).status_code == 403


def test_a_version_cannot_be_changed_by_posting_to_its_page(admin_client, workflow):
    version = workflow.versions.get()
    url = reverse("admin:workflows_workflowversion_change", args=[version.pk])
    response = admin_client.post(url, {"definition": "{}", "number": 5})
    assert response.status_code == 403
    assert WorkflowVersion.objects.get(pk=version.pk).definition == definition()


def test_the_publish_action_publishes_through_the_service(admin_client, workflow):
    services.workflow_update(workflow=workflow, user=None, definition=definition(tool_step("fetch")))
    draft = workflow.versions.get(number=2)
    response = admin_client.post(
        reverse("admin:workflows_workflowversion_changelist"),
        {"action": "publish", "_selected_action": [draft.pk]},
    )
    assert response.status_code == 302
    assert WorkflowVersion.objects.get(pk=draft.pk).published
    assert [str(m) for m in get_messages(response.wsgi_request)] == [f"{draft} is published."]


def test_the_publish_action_reports_a_version_that_no_longer_validates(admin_client, workflow, project):
    services.workflow_update(workflow=workflow, user=None, definition=definition(tool_step("fetch")))
    draft = workflow.versions.get(number=2)
    project.tools.update(enabled=False)
    response = admin_client.post(
        reverse("admin:workflows_workflowversion_changelist"),
        {"action": "publish", "_selected_action": [draft.pk]},
    )
    assert not WorkflowVersion.objects.get(pk=draft.pk).published
    (message,) = [str(m) for m in get_messages(response.wsgi_request)]
    assert message == f"{draft} was not published: steps > fetch: tool: 'search' is disabled."


def test_staff_without_permissions_cannot_open_workflows(workflow):
    client = Client()
    client.force_login(UserFactory(is_staff=True))
    assert client.get(reverse("admin:workflows_workflow_changelist")).status_code == 403
