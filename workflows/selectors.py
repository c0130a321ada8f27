"""Reads of workflows and versions that the API, the admin and (later) the run engine share."""

import difflib
import json

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


def latest_published_version(workflow: Workflow) -> WorkflowVersion | None:
    """The version a new run pins: the newest published one."""
    return workflow.versions.filter(published=True).order_by("-number").first()


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
