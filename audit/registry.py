"""The models whose every save and delete is audited, named by label so this app (at the bottom of
the layers) imports none of them. Adding a model is one line here; the project is read through
``project`` (a dotted path from the instance), secrets through the redaction rules in services."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Audited:
    #: Dotted path from an instance to its project's id ("pk" for a project itself).
    project: str = "project_id"
    #: Fields whose change alone is not worth an entry (bookkeeping the system writes).
    ignore: tuple[str, ...] = ()
    #: Fields recorded as changed but never with their values (on top of the name rules).
    redact: tuple[str, ...] = ()
    #: Many-to-many fields, recorded as [ids before, ids after] when their links change.
    m2m: tuple[str, ...] = ()


AUDITED: dict[str, Audited] = {
    "projects.Project": Audited(project="pk"),
    "projects.Membership": Audited(),
    "accounts.ApiKey": Audited(ignore=("last_used_at",), redact=("digest",)),
    "agents.ProviderCredential": Audited(redact=("secret_encrypted",)),
    "agents.Agent": Audited(
        m2m=("tools",), ignore=("health_status", "health_latency_ms", "health_error", "health_checked_at")
    ),
    "agents.Tool": Audited(),
    "workflows.Workflow": Audited(),
    "workflows.WorkflowVersion": Audited(project="workflow.project_id"),
    "policies.Policy": Audited(),
    "schedules.Schedule": Audited(ignore=("last_fire_at", "next_fire_at")),
    # A Slack incoming-webhook URL is itself a credential: recorded as changed, never its value.
    "webhooks.Endpoint": Audited(redact=("url",), ignore=("consecutive_failures", "disabled_reason")),
}
