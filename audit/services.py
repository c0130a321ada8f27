"""Writing the audit trail. Model saves and deletes of the registered models are recorded by the
receivers; verbs that are not a save of one row (a run's cancel, an approval, a freeze) call
``audit_record`` from the service that performs them, in its transaction."""

import datetime
import decimal
import uuid
from typing import Any

from django.db import models

from .choices import Action
from .context import current
from .models import AuditEntry
from .registry import Audited

REDACTED = "[redacted]"
#: Any field named like these is recorded as changed, never with its value.
SECRET_WORDS = ("secret", "password", "digest", "token", "encrypted")
#: Timestamps the database keeps: never a change of their own.
ALWAYS_IGNORED = frozenset({"created_at", "updated_at"})


def audit_record(
    *, action: str, obj: models.Model, project_id: Any = None, changes: dict | None = None, repr_: str = ""
) -> AuditEntry:
    """One entry for ``obj``, attributed to whoever acts now (see ``context``)."""
    context = current()
    actor = context.actor()
    return AuditEntry.objects.create(
        project_id=project_id,
        actor_user=actor.user,
        actor_api_key=actor.api_key,
        actor_label=actor.label,
        channel=context.channel,
        action=action,
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk),
        object_repr=(repr_ or str(obj))[:300],
        changes=changes or {},
        client_address=context.client_address(),
        request_id=context.request_id,
    )


def snapshot(instance: models.Model, spec: Audited, fields=None) -> dict[str, Any]:
    """The audited fields' values as JSON, secrets included: kept in memory to compare, and
    redacted by ``redact`` before anything is written."""
    values = {}
    for f in instance._meta.concrete_fields:
        if f.name in ALWAYS_IGNORED or f.name in spec.ignore or (fields is not None and f.name not in fields):
            continue
        values[f.name] = _jsonable(getattr(instance, f.attname))
    return values


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list]:
    """Field: [before, after] for each field that changed."""
    return {name: [before.get(name), new] for name, new in after.items() if before.get(name) != new}


def created(after: dict[str, Any]) -> dict[str, list]:
    return {name: [None, value] for name, value in after.items() if value not in (None, "", [], {})}


def redact(changes: dict[str, list], spec: Audited) -> dict[str, list]:
    """A secret that changed reads ``["[redacted]", "[redacted]"]``: that it changed is told, not
    to what (an empty side stays empty, so setting and clearing one can be told apart)."""
    return {
        name: [REDACTED if v not in (None, "") else v for v in pair] if _is_secret(name, spec) else pair
        for name, pair in changes.items()
    }


def project_of(instance: models.Model, spec: Audited) -> Any:
    value = instance
    for part in spec.project.split("."):
        value = getattr(value, part, None)
        if value is None:
            return None
    return value


def _is_secret(name: str, spec: Audited) -> bool:
    return name in spec.redact or any(word in name for word in SECRET_WORDS)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    return value


__all__ = ["Action", "audit_record"]
