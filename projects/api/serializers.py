from rest_framework import serializers

from sparkops.api.access import role_in
from sparkops.api.viewsets import ProjectField

from ..choices import Role
from ..models import Membership, Project

RETENTION_FIELDS = [
    "run_events_retention_days",
    "schedule_fires_retention_days",
    "policy_decisions_retention_days",
    "finished_runs_retention_days",
]


class ProjectSerializer(serializers.ModelSerializer):
    my_role = serializers.SerializerMethodField(help_text="The caller's role in this project.")
    slug = serializers.SlugField(
        max_length=64, required=False, help_text='Unique; derived from the name when omitted, e.g. "support-bots".'
    )

    class Meta:
        model = Project
        fields = [
            "id",
            "slug",
            "name",
            "description",
            "archived",
            "frozen_at",
            "frozen_reason",
            *RETENTION_FIELDS,
            "my_role",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "frozen_at", "frozen_reason", "created_by", "created_at", "updated_at"]

    def get_my_role(self, project: Project) -> str | None:
        return role_in(self.context["request"], project.pk)

    def validate_slug(self, value: str) -> str:
        taken = Project.objects.filter(slug=value)
        if self.instance is not None:
            taken = taken.exclude(pk=self.instance.pk)
        if taken.exists():
            raise serializers.ValidationError("A project with this slug already exists.")
        return value


class MembershipSerializer(serializers.ModelSerializer):
    project = ProjectField()
    # Write-only here: a Membership has no email attribute; to_representation adds the user's.
    email = serializers.EmailField(write_only=True, help_text='Email of a registered user, e.g. "ada@example.com".')
    name = serializers.CharField(source="user.name", read_only=True)
    role = serializers.ChoiceField(choices=Role.choices)

    class Meta:
        model = Membership
        fields = ["id", "project", "user", "email", "name", "role", "created_at"]
        read_only_fields = ["id", "user", "created_at"]

    def to_representation(self, instance: Membership) -> dict:
        data = super().to_representation(instance)
        data["email"] = instance.user.email
        return data


class MembershipRoleSerializer(serializers.ModelSerializer):
    """Only the role of an existing membership can change."""

    role = serializers.ChoiceField(choices=Role.choices)

    class Meta:
        model = Membership
        fields = ["role"]

    def to_representation(self, instance: Membership) -> dict:
        return MembershipSerializer(instance, context=self.context).data
