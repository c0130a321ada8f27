import uuid

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models.functions import Lower

from .choices import Role


def _retention(what: str) -> models.PositiveIntegerField:
    return models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text=f"Days {what} are kept, e.g. 30; empty: the global default (SPARKOPS_RETENTION_DAYS).",
    )


class Project(models.Model):
    """A tenant: every agent, workflow, run, schedule and policy belongs to exactly one project."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.SlugField(max_length=64, unique=True, help_text='URL-safe identifier, e.g. "support-bots".')
    name = models.CharField(max_length=200, help_text='Display name, e.g. "Support bots".')
    description = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    archived = models.BooleanField(
        default=False, help_text="Archived projects stay listed; filter them out with ?archived=false."
    )
    frozen_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Set while the project is frozen: no run or fire starts."
    )
    frozen_reason = models.CharField(max_length=500, blank=True, default="", editable=False)
    run_events_retention_days = _retention("run events")
    schedule_fires_retention_days = _retention("schedule fires")
    policy_decisions_retention_days = _retention("policy decisions")
    finished_runs_retention_days = _retention("finished runs (with their steps and events)")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [
            # The project list orders by name and narrows to the caller's memberships.
            models.Index(Lower("name"), name="projects_project_name_lower"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_frozen(self) -> bool:
        return self.frozen_at is not None


class Membership(models.Model):
    """A user's role in one project."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(
        max_length=16, choices=Role.choices, help_text='One of owner, admin, developer, viewer, e.g. "developer".'
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project_id", "user_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "user"],
                name="projects_membership_unique_project_user",
                violation_error_message="This user is already a member of the project.",
            ),
            models.CheckConstraint(
                condition=models.Q(role__in=Role.values),
                name="projects_membership_role_valid",
                violation_error_message="Unknown role.",
            ),
        ]
        # The unique constraint's index serves "members of project P"; this one serves
        # "the caller's roles", read on every scoped request.
        indexes = [models.Index(fields=["user", "project"], name="projects_membership_user")]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} as {self.role}"
