"""Save and delete of every registered model, recorded with a diff. Signals rather than calls in
each service: the admin saves models through its forms, and the channel a change came through
must not decide whether it is recorded. Bulk ``update()`` sends no signal; services that use one
call ``audit_record`` themselves."""

from functools import partial

from django.apps import apps
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save

from .choices import Action
from .registry import AUDITED, Audited
from .services import audit_record, diff, project_of, redact, snapshot
from .services import created as created_changes

_BEFORE = "_audit_before"


def connect_all() -> None:
    for label, spec in AUDITED.items():
        app_label, _, name = label.partition(".")
        try:
            apps.get_app_config(app_label)
        except LookupError:
            continue  # registered ahead of its app: recorded once the app is installed
        model = apps.get_model(app_label, name)  # a misspelt model fails loudly here
        uid = f"audit:{label}"
        pre_save.connect(partial(_before_save, spec=spec), sender=model, weak=False, dispatch_uid=uid)
        post_save.connect(partial(_after_save, spec=spec), sender=model, weak=False, dispatch_uid=uid)
        post_delete.connect(partial(_after_delete, spec=spec), sender=model, weak=False, dispatch_uid=uid)
        for name in spec.m2m:
            through = getattr(model, name).through
            m2m_changed.connect(
                partial(_links_changed, spec=spec, name=name), sender=through, weak=False, dispatch_uid=uid
            )


def _before_save(sender, instance, *, spec: Audited, raw=False, update_fields=None, **_) -> None:
    if raw or instance._state.adding:
        return
    stored = sender._base_manager.filter(pk=instance.pk).first()
    setattr(instance, _BEFORE, snapshot(stored, spec, update_fields) if stored is not None else None)


def _after_save(sender, instance, *, spec: Audited, created: bool = False, raw=False, update_fields=None, **_) -> None:
    if raw:
        return  # fixtures being loaded
    before = instance.__dict__.pop(_BEFORE, None)
    after = snapshot(instance, spec, update_fields)
    if created or before is None:
        changes, action = created_changes(after), Action.CREATE
    else:
        changes, action = diff(before, after), Action.UPDATE
        if not changes:
            return  # only bookkeeping moved (timestamps, health, the next fire)
    audit_record(action=action, obj=instance, project_id=project_of(instance, spec), changes=redact(changes, spec))


def _after_delete(sender, instance, *, spec: Audited, **_) -> None:
    audit_record(action=Action.DELETE, obj=instance, project_id=project_of(instance, spec))


def _links_changed(sender, instance, action: str, reverse: bool, *, spec: Audited, name: str, **_) -> None:
    """``agent.tools.set()`` removes, then adds: an entry for each step that changed the links."""
    if reverse:
        return  # a tool's side of the link: its agent's entry is the one that matters
    attr = f"_audit_m2m_{name}"
    if action.startswith("pre_"):
        setattr(instance, attr, _link_ids(instance, name))
        return
    before = instance.__dict__.pop(attr, None)
    after = _link_ids(instance, name)
    if before is not None and before != after:
        changes = {name: [before, after]}
        audit_record(action=Action.UPDATE, obj=instance, project_id=project_of(instance, spec), changes=changes)


def _link_ids(instance, name: str) -> list[str]:
    return sorted(str(pk) for pk in getattr(instance, name).values_list("pk", flat=True))
