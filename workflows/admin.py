import json

from django import forms
from django.contrib import admin, messages
from django.forms.fields import InvalidJSONInput

from sparkops.admin_scoping import ProjectScopedAdmin, ReadOnlyAdmin

from . import selectors, services, validation
from .definition import same_json
from .models import Workflow, WorkflowVersion


class PrettyJSONField(forms.JSONField):
    """JSON shown indented, so a definition can be read and edited in a textarea."""

    def prepare_value(self, value):
        if isinstance(value, InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False)


class WorkflowAdminForm(forms.ModelForm):
    """The workflow's fields plus its newest definition and input schema. Saving a changed
    definition or schema goes through the service and adds a version, as the API does."""

    definition = PrettyJSONField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 20, "cols": 100}),
        help_text="The newest version's steps. Saving a change adds a version; published versions never change.",
    )
    input_schema = PrettyJSONField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "cols": 100}),
        help_text='JSON Schema of the inputs, e.g. {"type": "object", "properties": {"topic": {"type": "string"}}}.',
    )

    class Meta:
        model = Workflow
        fields = ["project", "name", "slug", "description", "active"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.latest = None if self.instance._state.adding else self.instance.latest_version
        if self.latest is not None:
            self.fields["definition"].initial = self.latest.definition
            self.fields["input_schema"].initial = self.latest.input_schema
        else:
            self.fields["definition"].required = True

    def clean_slug(self) -> str:
        # Here, so a taken slug is reported on its field (the constraint reports it as non-field).
        slug = self.cleaned_data["slug"]
        project = self.cleaned_data.get("project") if self.instance._state.adding else self.instance.project
        if project and services.slug_taken(project_id=project.pk, slug=slug, workflow_id=self.instance.pk):
            raise forms.ValidationError(services.SLUG_TAKEN)
        return slug

    def content(self) -> dict:
        """The definition and input schema to save: an empty box keeps the newest version's."""
        latest, data = self.latest, self.cleaned_data
        definition, schema = data.get("definition"), data.get("input_schema")
        return {
            "definition": latest.definition if latest and definition is None else definition,
            "input_schema": (latest.input_schema if latest else {}) if schema is None else schema,
        }

    def clean(self) -> dict:
        cleaned = super().clean()
        project = cleaned.get("project") if self.instance._state.adding else self.instance.project
        if project is None or self.errors:
            return cleaned
        content = self.content()
        if self.latest is None or not same_json(content, _content_of(self.latest)):
            self._add_definition_errors(services.definition_errors(project_id=project.pk, **content))
        return cleaned

    def _add_definition_errors(self, errors: dict) -> None:
        for field, nested in errors.items():
            for message in validation.flat_messages(nested):
                self.add_error(field, message)


def _content_of(version: WorkflowVersion) -> dict:
    return {"definition": version.definition, "input_schema": version.input_schema}


class WorkflowVersionInline(admin.TabularInline):
    """Versions, newest first, read-only: edit the definition above to add one."""

    model = WorkflowVersion
    fields = ["number", "published", "published_at", "step_count", "created_by", "created_at"]
    readonly_fields = fields
    ordering = ["-number"]
    extra = 0
    can_delete = False
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("created_by")

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="steps")
    def step_count(self, version: WorkflowVersion) -> int:
        return len(version.definition.get("steps", [])) if isinstance(version.definition, dict) else 0


@admin.register(Workflow)
class WorkflowAdmin(ProjectScopedAdmin):
    form = WorkflowAdminForm
    list_display = ["name", "slug", "project", "active", "latest_version_number", "updated_at"]
    list_filter = ["active", ("project", admin.RelatedOnlyFieldListFilter)]  # scoped by get_queryset
    list_select_related = ["project"]
    search_fields = ["name", "slug", "description", "project__name"]
    autocomplete_fields = ["project"]
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ["created_at", "updated_at"]
    fields = ["project", "name", "slug", "description", "active", "definition", "input_schema", *readonly_fields]
    inlines = [WorkflowVersionInline]

    def get_queryset(self, request):
        return selectors.workflows_with_latest(super().get_queryset(request))

    def get_readonly_fields(self, request, obj=None) -> list[str]:
        # A workflow never moves between projects: its agents and tools are the project's.
        return [*self.readonly_fields, "project"] if obj else self.readonly_fields

    def get_prepopulated_fields(self, request, obj=None) -> dict:
        return {} if obj else self.prepopulated_fields

    @admin.display(description="latest version")
    def latest_version_number(self, workflow: Workflow) -> int | None:
        latest = workflow.latest_version
        return latest.number if latest else None

    def save_model(self, request, obj: Workflow, form: WorkflowAdminForm, change: bool) -> None:
        if change:
            fields = {name: getattr(obj, name) for name in services.EDITABLE_FIELDS}
            services.workflow_update(workflow=obj, user=request.user, **form.content(), **fields)
        else:
            services.workflow_add(workflow=obj, user=request.user, **form.content())


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(ReadOnlyAdmin):
    """Read-only: versions are added by editing their workflow, and changed by nothing."""

    project_path = "workflow__project"

    list_display = ["workflow", "number", "published", "published_at", "created_by", "created_at"]
    list_filter = ["published"]
    list_select_related = ["workflow", "created_by"]
    search_fields = ["workflow__name", "workflow__slug"]
    actions = ["publish"]

    def has_publish_permission(self, request) -> bool:
        return request.user.has_perm("workflows.change_workflowversion")

    @admin.action(description="Publish selected versions", permissions=["publish"])
    def publish(self, request, queryset) -> None:
        for version in queryset.select_related("workflow"):
            try:
                services.version_publish(version=version)
            except services.WorkflowInvalid as exc:
                lines = "; ".join(message for messages in exc.message_dict.values() for message in messages)
                self.message_user(request, f"{version} was not published: {lines}", messages.ERROR)
            else:
                self.message_user(request, f"{version} is published.", messages.SUCCESS)
