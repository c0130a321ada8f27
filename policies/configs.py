"""The configuration each policy kind takes: the kind's JSON Schema (published in the API docs)
plus the checks a schema cannot express (both in the kind's module, policies/kinds/).
``config_errors`` returns readable, keyed messages."""

import json
from typing import Any

import jsonschema

from . import kinds
from .kinds import PolicyKindBase
from .money import MONEY_KEYS, PLACES, too_precise


def _schema_errors(kind: PolicyKindBase, config: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(kind.schema)
    errors = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
        if error.validator == "anyOf" and not error.absolute_path:
            errors.append(kind.any_of_hint)
        elif error.validator == "required" and not error.absolute_path:
            # One error per missing key, each saying "'x' is a required property": name the key first.
            missing = [name for name in error.validator_value if name not in config and repr(name) in error.message]
            errors.extend(f"{name}: required, e.g. {json.dumps(kind.example[name])}." for name in missing)
        elif error.validator == "additionalProperties":
            allowed = ", ".join(kind.schema["properties"])
            unknown = sorted(set(error.instance) - set(kind.schema["properties"]))
            errors.extend(f"{name}: unknown key; {kind.name} takes {allowed}." for name in unknown)
        else:
            where = "/".join(map(str, error.absolute_path))
            errors.append(f"{where}: {error.message}" if where else error.message)
    return errors


def config_errors(kind_name: str, config: Any) -> list[str]:
    """Everything wrong with ``config`` for the kind named ``kind_name``; empty when it is valid."""
    kind = kinds.get(kind_name)
    if kind is None:
        return []  # the kind field reports an unknown kind
    if not isinstance(config, dict):
        return [f"Must be a JSON object, e.g. {json.dumps(kind.example)}."]
    errors = _schema_errors(kind, config)
    errors += [
        f"{key}: at most {PLACES} decimal places (the ledger keeps micro-dollars)."
        for key in MONEY_KEYS
        if key in kind.schema["properties"] and too_precise(config.get(key))
    ]
    if not errors:
        errors = kind.extra_errors(config)
    return errors


def action_errors(kind_name: str, action: str) -> list[str]:
    """Why a policy of this kind may not take ``action``, if it may not."""
    kind = kinds.get(kind_name)
    if kind is None or action in kind.actions:
        return []
    return [f"A {kind_name} policy can {', '.join(sorted(kind.actions))}; not {action}."]
