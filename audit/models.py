from django.conf import settings
from django.db import models
from django.utils import timezone

from .choices import Action, Channel


def _loose_fk(to: str, **kwargs) -> models.ForeignKey:
    # History outlives what it names: a deleted project, user or key leaves its entries intact
    # (no constraint, nothing cascades); the label columns keep who and what it was.
    return models.ForeignKey(
        to, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+", **kwargs
    )


class AuditEntry(models.Model):
    """One change someone (or something) made: who, through which channel, to what, and how it
    differed. Written in the same transaction as the change; never edited."""

    at = models.DateTimeField(default=timezone.now)
    project = _loose_fk("projects.Project", help_text="The project the object belongs to; empty for global objects.")
    actor_user = _loose_fk(settings.AUTH_USER_MODEL, help_text="The signed-in user, or the creator of the API key.")
    actor_api_key = _loose_fk("accounts.ApiKey", help_text="The API key the request came with, if any.")
    actor_label = models.CharField(
        max_length=300, blank=True, default="", help_text='Who, as it read then, e.g. "ada@example.com".'
    )
    channel = models.CharField(max_length=16, choices=Channel.choices)
    action = models.CharField(max_length=16, choices=Action.choices)
    object_type = models.CharField(max_length=100, help_text='App and model, e.g. "agents.agent".')
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=300, blank=True, default="")
    changes = models.JSONField(
        default=dict, blank=True, help_text='Field: [before, after], e.g. {"model": ["gpt-4o", "gpt-4o-mini"]}.'
    )
    client_address = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(channel__in=Channel.values),
                name="audit_entry_channel_valid",
                violation_error_message="Unknown channel.",
            )
        ]
        indexes = [
            # GET /audit?project=: a project's newest entries, cursor-paginated.
            models.Index(fields=["project", "-at", "-id"], name="audit_entry_project_at"),
            # An object's history (the admin's "history of this schedule").
            models.Index(fields=["object_type", "object_id"], name="audit_entry_object"),
            # Staff reading every project, newest first.
            models.Index(fields=["-at", "-id"], name="audit_entry_at"),
        ]

    def __str__(self) -> str:
        return f"{self.actor_label or self.channel} {self.action} {self.object_type} {self.object_repr}"
