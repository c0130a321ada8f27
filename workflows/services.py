"""Workflow services: create, edit (a changed definition becomes a new version), publish, delete.
The API, the admin and the seed command all come through here, so they share one set of rules."""

from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from accounts.models import User
from agents.selectors import catalog_for_project
from audit.choices import Action
from audit.services import audit_record
from projects.models import Project

from . import validation
from .definition import same_json
from .models import Workflow, WorkflowVersion

SLUG_TAKEN = "A workflow with this slug already exists in the project."
NO_VERSION_YET = "Required: this workflow has no version yet."
HAS_RUNS = "This workflow has runs, which keep its versions; make it inactive instead of deleting it."
EDITABLE_FIELDS = frozenset({"name", "slug", "description", "active"})  # a workflow never changes project


class WorkflowInvalid(ValidationError):
    """Refused input. ``errors`` keeps the nested per-step shape (for the API); as a Django
    ValidationError it carries the same messages one line each per field (for forms)."""

    def __init__(self, errors: dict):
        self.errors = errors
        super().__init__({field: validation.flat_messages(nested) for field, nested in errors.items()})


# ------------------------------------------------------------------------------
# Checking definitions
# ------------------------------------------------------------------------------
def definition_errors(*, project_id: Any, definition: Any, input_schema: Any, system: bool = False) -> dict:
    """What is wrong with a definition and input schema in this project's catalog; {} if nothing.
    ``system``: a system workflow's, which may use the system step kinds."""
    catalog = catalog_for_project(project_id)
    return validation.validate(definition, input_schema, {**catalog, "system": system} if system else catalog)


def slug_taken(*, project_id: Any, slug: str, workflow_id: Any = None, system: bool = False) -> bool:
    """Whether another workflow of the project (of the same sort: people's or system) has this slug."""
    others = Workflow.everything.filter(project_id=project_id, slug=slug, system=system).exclude(pk=workflow_id)
    return others.exists()


def _workflow_errors(workflow: Workflow) -> dict:
    # The slug first, so a taken one is reported on its field (full_clean reports it as non-field).
    if slug_taken(project_id=workflow.project_id, slug=workflow.slug, workflow_id=workflow.pk, system=workflow.system):
        return {"slug": [SLUG_TAKEN]}
    try:
        workflow.full_clean()
    except ValidationError as exc:
        return exc.message_dict
    return {}


def _raise_if(errors: dict) -> None:
    if errors:
        raise WorkflowInvalid(errors)


def _save(workflow: Workflow, **kwargs) -> None:
    try:
        with transaction.atomic():  # a savepoint: PostgreSQL refuses more queries after an error
            workflow.save(**kwargs)
    except IntegrityError as exc:  # the same slug taken by a concurrent request
        raise WorkflowInvalid({"slug": [SLUG_TAKEN]}) from exc


# ------------------------------------------------------------------------------
# Workflows
# ------------------------------------------------------------------------------
def workflow_create(
    *,
    project: Project,
    user: User | None,
    name: str,
    slug: str,
    description: str = "",
    definition: Any,
    input_schema: Any = None,
    active: bool = True,
    publish: bool = False,
    system: bool = False,
) -> Workflow:
    """Create a workflow with version 1 (published at once when ``publish``). ``system``: one the
    platform runs and people never see (the task board's)."""
    workflow = Workflow(project=project, name=name, slug=slug, description=description, active=active, system=system)
    return workflow_add(workflow=workflow, user=user, definition=definition, input_schema=input_schema, publish=publish)


@transaction.atomic
def workflow_add(
    *, workflow: Workflow, user: User | None, definition: Any, input_schema: Any = None, publish: bool = False
) -> Workflow:
    """Save a workflow built but not yet saved (as the admin's form builds it) with version 1."""
    input_schema = {} if input_schema is None else input_schema
    errors = _workflow_errors(workflow)
    errors |= definition_errors(
        project_id=workflow.project_id, definition=definition, input_schema=input_schema, system=workflow.system
    )
    _raise_if(errors)
    _save(workflow)
    version = _version_add(workflow=workflow, user=user, number=1, definition=definition, input_schema=input_schema)
    if publish:
        version_publish(version=version)
    return workflow


@transaction.atomic
def workflow_update(
    *, workflow: Workflow, user: User | None, definition: Any = None, input_schema: Any = None, **fields: Any
) -> Workflow:
    """Change name, slug, description or active; a definition or input schema that differs from the
    newest version's becomes a new version (number + 1), so published versions never change.
    ``None`` means unchanged."""
    if set(fields) - EDITABLE_FIELDS:
        raise TypeError(f"Only {', '.join(sorted(EDITABLE_FIELDS))} can change; got {', '.join(fields)}.")
    # Lock the workflow row: two edits at once would both read version n and both add n + 1.
    list(Workflow.objects.select_for_update().filter(pk=workflow.pk).values_list("pk"))
    for name, value in fields.items():
        setattr(workflow, name, value)
    latest = workflow.versions.order_by("-number").first()
    content = _next_content(latest, definition, input_schema)
    errors = _workflow_errors(workflow)
    if content is not None:
        errors |= definition_errors(project_id=workflow.project_id, **content)
    _raise_if(errors)
    _save(workflow, update_fields=[*fields, "updated_at"])
    if content is not None:
        _version_add(workflow=workflow, user=user, number=latest.number + 1 if latest else 1, **content)
    return workflow


def _next_content(latest: WorkflowVersion | None, definition: Any, input_schema: Any) -> dict | None:
    """The new version's definition and input schema, or None when there is nothing new."""
    if latest is None:
        if definition is None and input_schema is not None:
            raise WorkflowInvalid({"definition": [NO_VERSION_YET]})
        if definition is None:
            return None
        return {"definition": definition, "input_schema": {} if input_schema is None else input_schema}
    content = {
        "definition": latest.definition if definition is None else definition,
        "input_schema": latest.input_schema if input_schema is None else input_schema,
    }
    current = {"definition": latest.definition, "input_schema": latest.input_schema}
    return None if same_json(content, current) else content


def workflow_delete(*, workflow: Workflow) -> None:
    try:
        with transaction.atomic():
            workflow.delete()
    except ProtectedError as exc:  # runs pin its versions, and keep them
        raise ValidationError(HAS_RUNS) from exc


# ------------------------------------------------------------------------------
# Versions
# ------------------------------------------------------------------------------
def _version_add(
    *, workflow: Workflow, user: User | None, number: int, definition: Any, input_schema: Any
) -> WorkflowVersion:
    version = WorkflowVersion(
        workflow=workflow, number=number, definition=definition, input_schema=input_schema, created_by=user
    )
    version.full_clean()
    version.save()
    return version


@transaction.atomic
def version_publish(*, version: WorkflowVersion) -> WorkflowVersion:
    """Freeze a version so runs can pin it. Idempotent: publishing it again changes nothing, not
    even its publication time. It must still be valid against today's catalog (an agent it names
    may have been disabled since it was saved)."""
    if not version.published:
        project_id = version.workflow.project_id
        _raise_if(
            definition_errors(
                project_id=project_id,
                definition=version.definition,
                input_schema=version.input_schema,
                system=version.workflow.system,
            )
        )
    # A conditional UPDATE: of two publishes at once, the first sets the time and the second
    # finds nothing to change.
    published = WorkflowVersion.objects.filter(pk=version.pk, published=False).update(
        published=True, published_at=timezone.now()
    )
    version.refresh_from_db(fields=["published", "published_at"])
    if published:  # update() sends no signal: the trail is written here
        project_id = version.workflow.project_id
        audit_record(action=Action.UPDATE, obj=version, project_id=project_id, changes={"published": [False, True]})
    return version
