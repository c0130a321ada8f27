"""Reads of workflows and versions that the API, the admin and (later) the run engine share."""

import difflib
import json
from functools import lru_cache

from django.db.models import OuterRef, Prefetch, QuerySet, Subquery

from . import dag
from .models import Workflow, WorkflowVersion


def workflows_with_latest(queryset: QuerySet[Workflow] | None = None) -> QuerySet[Workflow]:
    """Workflows with their newest version attached in one extra query, however many there are
    (read through ``Workflow.latest_version``)."""
    queryset = Workflow.objects.all() if queryset is None else queryset
    newest = WorkflowVersion.objects.filter(workflow=OuterRef("workflow")).order_by("-number").values("pk")[:1]
    latest = WorkflowVersion.objects.filter(pk=Subquery(newest))
    return queryset.prefetch_related(Prefetch("versions", queryset=latest, to_attr="_latest_versions"))


def version_of(workflow: Workflow, number: int) -> WorkflowVersion | None:
    return workflow.versions.filter(number=number).first()


def with_latest_published(queryset: QuerySet[Workflow]) -> QuerySet[Workflow]:
    """Workflows with the id of their newest published version read in the same query
    (``latest_published_id``), so latest_published_version answers from the process's cache."""
    newest = WorkflowVersion.objects.filter(workflow=OuterRef("pk"), published=True).order_by("-number")
    return queryset.annotate(latest_published_id=Subquery(newest.values("pk")[:1]))


def latest_published_version(workflow: Workflow) -> WorkflowVersion | None:
    """The version a new run pins: the newest published one. Read once per process when the
    workflow came through with_latest_published (which of them is newest is read afresh each time)."""
    if hasattr(workflow, "latest_published_id"):
        version_id = workflow.latest_published_id
        return None if version_id is None else published_version(version_id, workflow.pk)
    return workflow.versions.filter(published=True).order_by("-number").first()


@lru_cache(maxsize=1024)
def published_version(version_id: int, workflow_id) -> WorkflowVersion:
    """A published version, read once per process: published versions never change (a published
    version is not unpublished, and its definition and schema are frozen). Keyed by the workflow
    too: SQLite hands a deleted row's id to the next row, but a workflow's id is never given
    again, and a published version is only deleted with its workflow. Shared between callers:
    read it, never change it."""
    return WorkflowVersion.objects.get(pk=version_id, workflow_id=workflow_id)


def _pretty(version: WorkflowVersion) -> list[str]:
    body = {"definition": version.definition, "input_schema": version.input_schema}
    return json.dumps(body, indent=2, sort_keys=True).splitlines(keepends=True)


def version_diff(old: WorkflowVersion, new: WorkflowVersion) -> dict:
    """Steps added, removed and changed from ``old`` to ``new``, whether the input schema changed,
    and a unified diff of both as pretty JSON."""
    text = difflib.unified_diff(_pretty(old), _pretty(new), f"v{old.number}", f"v{new.number}")
    return {
        **dag.step_changes(old.definition, new.definition),
        "input_schema_changed": old.input_schema != new.input_schema,
        "text": "".join(text),
    }
