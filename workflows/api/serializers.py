from rest_framework import serializers

from sparkops.api.viewsets import ProjectField

from ..models import Workflow, WorkflowVersion

DEFINITION_HELP = (
    'The steps, a DAG: {"steps": [{"key": "fetch", "kind": "tool", "tool": "search", "input": {"q": '
    '"{{ inputs.topic }}"}}, {"key": "summarize", "kind": "agent", "agent": "writer", "depends_on": ["fetch"], '
    '"prompt": "Summarize {{ steps.fetch.output }}"}]}. Kinds: agent, tool, approval, condition.'
)
INPUT_SCHEMA_HELP = (
    'JSON Schema of the run inputs, e.g. {"type": "object", "properties": {"topic": {"type": "string"}}}.'
)


class FromLatestVersion:
    """Reads ``latest_version.<attr>``, and null for a workflow without versions (one made outside
    the services), where a plain dotted source would fail."""

    def get_attribute(self, workflow: Workflow):
        latest = workflow.latest_version
        return None if latest is None else getattr(latest, self.source_attrs[-1])


class LatestVersionInteger(FromLatestVersion, serializers.IntegerField):
    pass


class LatestVersionJSON(FromLatestVersion, serializers.JSONField):
    pass


class WorkflowSerializer(serializers.ModelSerializer):
    """A workflow with its newest version's number, definition and input schema. Writing a
    definition or input schema that differs from the newest version's adds a version."""

    project = ProjectField()
    latest_version = LatestVersionInteger(
        source="latest_version.number", read_only=True, help_text="Number of the newest version, e.g. 3."
    )
    # Read from the newest version; on write, the service turns them into a new version.
    definition = LatestVersionJSON(source="latest_version.definition", help_text=DEFINITION_HELP)
    input_schema = LatestVersionJSON(source="latest_version.input_schema", required=False, help_text=INPUT_SCHEMA_HELP)

    class Meta:
        model = Workflow
        fields = [
            "id",
            "project",
            "name",
            "slug",
            "description",
            "active",
            "latest_version",
            "definition",
            "input_schema",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        # The service checks the slug (project, slug) and reports it on the slug field.
        validators: list = []

    def validate(self, attrs: dict) -> dict:
        # {"latest_version": {"definition": ...}} (from the sources above) -> the service's keywords.
        attrs.update(attrs.pop("latest_version", {}))
        return attrs


class WorkflowVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = WorkflowVersion
        fields = [
            "id",
            "workflow",
            "number",
            "definition",
            "input_schema",
            "published",
            "published_at",
            "created_by",
            "created_at",
        ]
        read_only_fields = fields


class WorkflowValidateSerializer(serializers.Serializer):
    project = ProjectField()
    definition = serializers.JSONField(help_text=DEFINITION_HELP)
    input_schema = serializers.JSONField(required=False, default=dict, help_text=INPUT_SCHEMA_HELP)


class ValidationResultSerializer(serializers.Serializer):
    valid = serializers.BooleanField(help_text="Always true: an invalid definition answers 400 with its errors.")


class _FromToSerializer(serializers.Serializer):
    def get_fields(self) -> dict:
        # "from" is a Python keyword, so it cannot be declared as a class attribute.
        fields = super().get_fields()
        fields["from"] = serializers.IntegerField(min_value=1, help_text="The older version's number, e.g. 1.")
        fields["to"] = serializers.IntegerField(min_value=1, help_text="The newer version's number, e.g. 2.")
        return fields


class VersionDiffQuerySerializer(_FromToSerializer):
    """?from=1&to=2"""


class VersionDiffSerializer(_FromToSerializer):
    added = serializers.ListField(child=serializers.CharField(), help_text='Step keys only in "to".')
    removed = serializers.ListField(child=serializers.CharField(), help_text='Step keys only in "from".')
    changed = serializers.ListField(child=serializers.CharField(), help_text="Step keys in both, changed.")
    input_schema_changed = serializers.BooleanField()
    text = serializers.CharField(help_text="A unified diff of both versions as pretty JSON.")
