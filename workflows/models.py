import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from .definition import same_json

PUBLISHED_IS_FINAL = "Version {number} is published; its definition and input schema can no longer change."


class PeopleWorkflows(models.Manager):
    """Workflows people made and edit. System workflows (the task board's) belong to the engine:
    no list, lookup or edit through this manager finds them; ``Workflow.everything`` does."""

    def get_queryset(self) -> models.QuerySet:
        return super().get_queryset().filter(system=False)


class Workflow(models.Model):
    """A named, versioned DAG of agent, tool, approval and condition steps in one project. Its steps
    live in its versions; the newest version is what an edit changes, a published one what runs pin."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="workflows")
    name = models.CharField(max_length=200, help_text='Display name, e.g. "Triage support tickets".')
    slug = models.SlugField(max_length=64, help_text='Unique in the project, e.g. "triage-tickets".')
    description = models.TextField(blank=True, default="", help_text='e.g. "Labels and routes new tickets."')
    active = models.BooleanField(
        default=True, help_text="Inactive workflows keep their versions but start no runs, e.g. while reworked."
    )
    system = models.BooleanField(
        default=False,
        editable=False,
        help_text="Made and run by the platform (the task board's runs); never listed or edited by people.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    everything = models.Manager()
    objects = PeopleWorkflows()

    class Meta:
        ordering = ["name"]
        default_manager_name = "objects"
        base_manager_name = "everything"  # a run's workflow is found whatever it is
        constraints = [
            # Its index also serves the list's "project = ?" filter and ?slug= lookups. System
            # workflows stand outside it: a person's slug never collides with one of theirs.
            models.UniqueConstraint(
                fields=["project", "slug"],
                condition=models.Q(system=False),
                name="workflows_workflow_unique_slug",
                violation_error_message="A workflow with this slug already exists in the project.",
            ),
            models.UniqueConstraint(
                fields=["project", "slug"],
                condition=models.Q(system=True),
                name="workflows_workflow_unique_system_slug",
                violation_error_message="A system workflow with this slug already exists in the project.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def latest_version(self) -> "WorkflowVersion | None":
        """The newest version; from the prefetch of ``selectors.workflows_with_latest`` when there."""
        if hasattr(self, "_latest_versions"):
            return self._latest_versions[0] if self._latest_versions else None
        return self.versions.order_by("-number").first()


class WorkflowVersion(models.Model):
    """One numbered revision (1, 2, 3, ...) of a workflow's definition and input schema. Editing
    a workflow adds a version; publishing one freezes it, so a run that pins it always means the
    same steps."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField(help_text="1 for the first version, then one more per edit, e.g. 3.")
    definition = models.JSONField(
        help_text='The steps, e.g. {"steps": [{"key": "fetch", "kind": "tool", "tool": "search"}]}.'
    )
    input_schema = models.JSONField(
        default=dict,
        blank=True,
        help_text='JSON Schema of the inputs, e.g. {"type": "object", "properties": {"topic": {"type": "string"}}}.',
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    published = models.BooleanField(default=False, help_text="Published versions never change and can be run.")
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["workflow_id", "number"]
        constraints = [
            # Its index serves "version n of W" and "the newest version of W" (ORDER BY number DESC).
            models.UniqueConstraint(
                fields=["workflow", "number"],
                name="workflows_version_unique_number",
                violation_error_message="This workflow already has a version with this number.",
            ),
            models.CheckConstraint(
                condition=models.Q(number__gte=1),
                name="workflows_version_number_positive",
                violation_error_message="Version numbers start at 1.",
            ),
            models.CheckConstraint(
                condition=models.Q(published=False) | models.Q(published_at__isnull=False),
                name="workflows_version_published_at_set",
                violation_error_message="A published version needs its publication time.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow} v{self.number}"

    def save(self, *args, **kwargs) -> None:
        self._refuse_changing_published()
        super().save(*args, **kwargs)

    def _refuse_changing_published(self) -> None:
        # Read the stored row rather than trust this instance: a stale copy loaded before the
        # version was published must not overwrite it. (QuerySet.update() bypasses this; only
        # services.version_publish uses it, and it changes no content.)
        if self._state.adding:
            return
        stored = WorkflowVersion.objects.filter(pk=self.pk, published=True).values("definition", "input_schema")
        stored = stored.first()
        mine = {"definition": self.definition, "input_schema": self.input_schema}
        if stored and not same_json(stored, mine):
            raise ValidationError(PUBLISHED_IS_FINAL.format(number=self.number))
