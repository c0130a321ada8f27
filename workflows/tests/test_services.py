"""Workflow services and selectors, called directly: versions, immutability, catalog checks."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.tests.factories import UserFactory
from projects.tests.factories import ProjectFactory
from workflows import selectors, services
from workflows.models import PUBLISHED_IS_FINAL, Workflow, WorkflowVersion
from workflows.tests.factories import (
    INPUT_SCHEMA,
    AgentFactory,
    ToolFactory,
    WorkflowFactory,
    WorkflowVersionFactory,
    agent_step,
    catalog_for,
    definition,
    tool_step,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def project():
    project = ProjectFactory()
    catalog_for(project)
    return project


@pytest.fixture
def user():
    return UserFactory()


def create(project, user, **overrides) -> Workflow:
    fields = {
        "name": "Triage",
        "slug": "triage",
        "description": "Routes tickets",
        "definition": definition(),
        "input_schema": INPUT_SCHEMA,
    }
    return services.workflow_create(project=project, user=user, **(fields | overrides))


def versions(workflow: Workflow) -> list[tuple[int, bool]]:
    return list(workflow.versions.order_by("number").values_list("number", "published"))


# ------------------------------------------------------------------------------
# workflow_create
# ------------------------------------------------------------------------------
def test_workflow_create_saves_the_workflow_and_an_unpublished_version_1(project, user):
    workflow = create(project, user)
    workflow.refresh_from_db()
    assert (workflow.project, workflow.name, workflow.slug, workflow.description, workflow.active) == (
        project,
        "Triage",
        "triage",
        "Routes tickets",
        True,
    )
    version = workflow.versions.get()
    assert (version.number, version.published, version.published_at, version.created_by) == (1, False, None, user)
    assert (version.definition, version.input_schema) == (definition(), INPUT_SCHEMA)


def test_workflow_create_can_publish_version_1_at_once(project, user):
    version = create(project, user, publish=True).versions.get()
    assert version.published
    assert version.published_at is not None


def test_workflow_create_defaults_the_input_schema_to_an_empty_object(project, user):
    workflow = create(project, user, definition=definition({"key": "gate", "kind": "approval"}), input_schema=None)
    assert workflow.versions.get().input_schema == {}


def test_workflow_create_refuses_an_invalid_definition_and_writes_nothing(project, user):
    with pytest.raises(services.WorkflowInvalid) as caught:
        create(project, user, definition=definition(tool_step("fetch", depends_on=["nope"])))
    assert caught.value.errors == {"definition": {"steps": {"fetch": ["depends_on: unknown step 'nope'."]}}}
    # As a Django ValidationError, the same messages one line each, for forms.
    assert caught.value.message_dict == {"definition": ["steps > fetch: depends_on: unknown step 'nope'."]}
    assert not Workflow.objects.exists()
    assert not WorkflowVersion.objects.exists()


def test_workflow_create_checks_against_the_projects_own_catalog(user):
    elsewhere = ProjectFactory()
    catalog_for(elsewhere)  # the same slugs, in another project, do not count
    with pytest.raises(services.WorkflowInvalid) as caught:
        create(ProjectFactory(), user)
    assert caught.value.errors["definition"]["steps"] == {
        "fetch": ["tool: no tool 'search' in this project."],
        "summarize": ["agent: no agent 'writer' in this project."],
    }


def test_workflow_create_refuses_disabled_agents_and_tools(user):
    project = ProjectFactory()
    AgentFactory(project=project, slug="writer", status="disabled")
    ToolFactory(project=project, slug="search", enabled=False)
    with pytest.raises(services.WorkflowInvalid) as caught:
        create(project, user)
    assert caught.value.errors["definition"]["steps"] == {
        "fetch": ["tool: 'search' is disabled."],
        "summarize": ["agent: 'writer' is disabled."],
    }


def test_workflow_create_refuses_a_slug_taken_in_the_project_on_the_slug_field(project, user):
    create(project, user)
    with pytest.raises(services.WorkflowInvalid) as caught:
        create(project, user, name="Other")
    assert caught.value.errors == {"slug": [services.SLUG_TAKEN]}
    assert Workflow.objects.count() == 1


def test_workflow_create_allows_the_same_slug_in_another_project(project, user):
    other = ProjectFactory()
    catalog_for(other)
    create(project, user)
    create(other, user)
    assert Workflow.objects.filter(slug="triage").count() == 2


def test_workflow_create_reports_field_and_definition_errors_together(project, user):
    with pytest.raises(services.WorkflowInvalid) as caught:
        create(project, user, name="", slug="not a slug", definition={})
    assert set(caught.value.errors) == {"name", "slug", "definition"}


# ------------------------------------------------------------------------------
# workflow_update
# ------------------------------------------------------------------------------
def test_changing_only_name_description_or_active_adds_no_version(project, user):
    workflow = create(project, user)
    services.workflow_update(workflow=workflow, user=user, name="Renamed", description="New", active=False)
    workflow.refresh_from_db()
    assert (workflow.name, workflow.description, workflow.active) == ("Renamed", "New", False)
    assert versions(workflow) == [(1, False)]


def test_a_changed_definition_adds_the_next_version_by_its_editor(project, user):
    workflow = create(project, user, publish=True)
    editor = UserFactory()
    new = definition(tool_step("fetch", timeout_seconds=30))
    services.workflow_update(workflow=workflow, user=editor, definition=new)
    assert versions(workflow) == [(1, True), (2, False)]
    latest = workflow.versions.get(number=2)
    assert (latest.definition, latest.input_schema, latest.created_by) == (new, INPUT_SCHEMA, editor)
    assert workflow.versions.get(number=1).definition == definition()  # the published one is untouched


def test_a_changed_input_schema_alone_adds_a_version_with_the_same_definition(project, user):
    workflow = create(project, user)
    schema = {**INPUT_SCHEMA, "properties": {"topic": {"type": "string", "maxLength": 80}}}
    services.workflow_update(workflow=workflow, user=user, input_schema=schema)
    latest = workflow.versions.get(number=2)
    assert (latest.definition, latest.input_schema) == (definition(), schema)


def test_an_unchanged_definition_adds_no_version(project, user):
    workflow = create(project, user)
    services.workflow_update(workflow=workflow, user=user, definition=definition(), input_schema=INPUT_SCHEMA)
    assert versions(workflow) == [(1, False)]


def test_a_value_changed_from_one_to_true_is_a_change(project, user):
    def check(right) -> dict:
        step = {"key": "check", "kind": "condition", "left": "{{ inputs.topic }}", "op": "==", "right": right}
        return definition(step | {"then": ["gate"]}, {"key": "gate", "kind": "approval"})

    workflow = create(project, user, definition=check(1))
    services.workflow_update(workflow=workflow, user=user, definition=check(True))  # 1 == True in Python
    assert versions(workflow) == [(1, False), (2, False)]
    assert workflow.versions.get(number=2).definition == check(True)


def test_an_invalid_edit_changes_nothing_at_all(project, user):
    workflow = create(project, user)
    with pytest.raises(services.WorkflowInvalid) as caught:
        services.workflow_update(
            workflow=workflow, user=user, name="Renamed", definition=definition(agent_step("a", agent="ghost"))
        )
    assert caught.value.errors == {"definition": {"steps": {"a": ["agent: no agent 'ghost' in this project."]}}}
    assert Workflow.objects.get(pk=workflow.pk).name == "Triage"
    assert versions(workflow) == [(1, False)]


def test_an_input_schema_edit_is_checked_against_the_templates_that_read_it(project, user):
    workflow = create(project, user)
    with pytest.raises(services.WorkflowInvalid) as caught:
        services.workflow_update(workflow=workflow, user=user, input_schema={"type": "object"})
    assert caught.value.errors["definition"]["steps"]["fetch"] == [
        "input.q: unknown input 'topic'; the input schema's properties are: none."
    ]


def test_renaming_does_not_recheck_a_definition_whose_agent_was_since_disabled(project, user):
    workflow = create(project, user)
    project.agents.update(status="disabled")
    services.workflow_update(workflow=workflow, user=user, name="Still renamable")
    assert Workflow.objects.get(pk=workflow.pk).name == "Still renamable"


def test_an_update_refuses_a_slug_taken_in_the_project(project, user):
    create(project, user, slug="taken")
    workflow = create(project, user)
    with pytest.raises(services.WorkflowInvalid) as caught:
        services.workflow_update(workflow=workflow, user=user, slug="taken")
    assert caught.value.errors == {"slug": [services.SLUG_TAKEN]}


def test_an_update_cannot_move_a_workflow_to_another_project(project, user):
    workflow = create(project, user)
    with pytest.raises(TypeError):
        services.workflow_update(workflow=workflow, user=user, project=ProjectFactory())


def test_a_workflow_without_versions_gets_version_1_from_its_first_definition(project, user):
    workflow = WorkflowFactory(project=project)
    services.workflow_update(workflow=workflow, user=user, definition=definition({"key": "gate", "kind": "approval"}))
    assert versions(workflow) == [(1, False)]
    assert workflow.versions.get().input_schema == {}


def test_a_workflow_without_versions_needs_a_definition_before_an_input_schema(project, user):
    workflow = WorkflowFactory(project=project)
    with pytest.raises(services.WorkflowInvalid) as caught:
        services.workflow_update(workflow=workflow, user=user, input_schema=INPUT_SCHEMA)
    assert caught.value.errors == {"definition": [services.NO_VERSION_YET]}


def test_workflow_delete_removes_its_versions(project, user):
    workflow = create(project, user)
    services.workflow_delete(workflow=workflow)
    assert not Workflow.objects.exists()
    assert not WorkflowVersion.objects.exists()


# ------------------------------------------------------------------------------
# version_publish and immutability
# ------------------------------------------------------------------------------
def test_version_publish_freezes_a_version_once(project, user):
    version = create(project, user).versions.get()
    services.version_publish(version=version)
    first_time = WorkflowVersion.objects.get(pk=version.pk).published_at
    assert first_time is not None
    services.version_publish(version=WorkflowVersion.objects.get(pk=version.pk))
    again = WorkflowVersion.objects.get(pk=version.pk)
    assert (again.published, again.published_at) == (True, first_time)


def test_version_publish_refuses_a_version_whose_agent_was_since_disabled(project, user):
    version = create(project, user).versions.get()
    project.agents.update(status="disabled")
    with pytest.raises(services.WorkflowInvalid) as caught:
        services.version_publish(version=version)
    assert caught.value.errors["definition"]["steps"] == {"summarize": ["agent: 'writer' is disabled."]}
    assert not WorkflowVersion.objects.get(pk=version.pk).published


def test_republishing_does_not_recheck_the_catalog(project, user):
    version = create(project, user, publish=True).versions.get()
    project.agents.update(status="disabled")
    assert services.version_publish(version=version).published


def test_saving_a_published_version_with_a_new_definition_is_refused(project, user):
    version = create(project, user, publish=True).versions.get()
    version.definition = definition(tool_step("fetch"))
    with pytest.raises(ValidationError) as caught:
        version.save()
    assert caught.value.messages == [PUBLISHED_IS_FINAL.format(number=1)]
    assert WorkflowVersion.objects.get(pk=version.pk).definition == definition()


def test_a_stale_copy_loaded_before_publishing_cannot_change_the_input_schema(project, user):
    version = create(project, user).versions.get()
    stale = WorkflowVersion.objects.get(pk=version.pk)
    services.version_publish(version=version)
    stale.input_schema = {"type": "object"}
    with pytest.raises(ValidationError):
        stale.save()
    assert WorkflowVersion.objects.get(pk=version.pk).input_schema == INPUT_SCHEMA


def test_an_unpublished_version_and_a_published_ones_other_fields_may_still_be_saved(project, user):
    version = create(project, user).versions.get()
    version.definition = definition(tool_step("fetch"))
    version.save()
    services.version_publish(version=version)
    version.created_by = None
    version.save()
    assert WorkflowVersion.objects.get(pk=version.pk).created_by is None


@pytest.mark.parametrize(
    "fields",
    [{"number": 1}, {"number": 0}, {"number": 2, "published": True, "published_at": None}],
    ids=["duplicate-number", "number-zero", "published-without-time"],
)
def test_the_database_refuses_what_the_constraints_forbid(project, user, fields):
    workflow = create(project, user)
    with pytest.raises(IntegrityError), transaction.atomic():
        WorkflowVersion.objects.create(workflow=workflow, definition={}, **fields)


def test_full_clean_names_the_constraint_messages(project, user):
    workflow = create(project, user)
    version = WorkflowVersion(workflow=workflow, number=1, definition={})
    with pytest.raises(ValidationError, match="already has a version with this number"):
        version.full_clean()
    duplicate = Workflow(project=project, name="Copy", slug=workflow.slug)
    with pytest.raises(ValidationError, match=r"A workflow with this slug already exists in the project\."):
        duplicate.full_clean()


# ------------------------------------------------------------------------------
# Selectors
# ------------------------------------------------------------------------------
def test_workflows_with_latest_attaches_the_newest_version_in_one_query(project, django_assert_num_queries):
    for _ in range(3):
        workflow = WorkflowFactory(project=project)
        WorkflowVersionFactory.create_batch(3, workflow=workflow)
    WorkflowFactory(project=project)  # no versions yet
    with django_assert_num_queries(2):
        rows = list(selectors.workflows_with_latest().order_by("slug"))
        latest = [w.latest_version.number if w.latest_version else None for w in rows]
    assert latest == [3, 3, 3, None]


def test_latest_published_version_is_the_newest_published_one(project):
    workflow = WorkflowFactory(project=project)
    now = timezone.now()
    WorkflowVersionFactory(workflow=workflow, published=True, published_at=now)
    second = WorkflowVersionFactory(workflow=workflow, published=True, published_at=now)
    WorkflowVersionFactory(workflow=workflow)
    assert selectors.latest_published_version(workflow) == second
    assert selectors.latest_published_version(WorkflowFactory(project=project)) is None


def test_version_diff_summarises_steps_and_shows_a_unified_diff(project):
    workflow = WorkflowFactory(project=project)
    old = WorkflowVersionFactory(workflow=workflow, definition=definition(tool_step("a"), tool_step("b")))
    new = WorkflowVersionFactory(
        workflow=workflow, definition=definition(tool_step("a", timeout_seconds=9), tool_step("c"))
    )
    diff = selectors.version_diff(old, new)
    assert (diff["added"], diff["removed"], diff["changed"], diff["input_schema_changed"]) == (
        ["c"],
        ["b"],
        ["a"],
        False,
    )
    assert diff["text"].startswith("--- v1\n+++ v2\n@@")
    assert '+        "timeout_seconds": 9,\n' in diff["text"] or '+        "timeout_seconds": 9\n' in diff["text"]
    assert selectors.version_diff(old, old)["text"] == ""
