"""The configuration each policy kind takes: a JSON Schema per kind (published in the API docs)
plus the checks a schema cannot express. ``config_errors`` returns readable, keyed messages."""

import json
from typing import Any
from zoneinfo import available_timezones

import jsonschema

from agents.choices import RiskClass

from .choices import PolicyKind, Window
from .money import MONEY_KEYS, PLACES, too_precise

_SLUG = {"type": "string", "minLength": 1, "maxLength": 64}
_USD = {"type": "number", "exclusiveMinimum": 0, "maximum": 1_000_000_000}

SCHEMAS: dict[str, dict] = {
    PolicyKind.BUDGET: {
        "type": "object",
        "properties": {
            "amount_usd": _USD,
            "window": {"enum": list(Window.values)},
            "days": {"type": "integer", "minimum": 1, "maximum": 366},
            "timezone": {"type": "string"},
            "agent": _SLUG,
            "model": {"type": "string", "minLength": 1, "maxLength": 140},
            "workflow": _SLUG,
        },
        "required": ["amount_usd", "window"],
        "additionalProperties": False,
    },
    PolicyKind.RUN_CEILING: {
        "type": "object",
        "properties": {"max_usd": _USD, "max_tokens": {"type": "integer", "minimum": 1}},
        "anyOf": [{"required": ["max_usd"]}, {"required": ["max_tokens"]}],
        "additionalProperties": False,
    },
    PolicyKind.RATE_LIMIT: {
        "type": "object",
        "properties": {
            "max_runs": {"type": "integer", "minimum": 1},
            "per": {"enum": ["minute", "hour"]},
            "scope": {"enum": ["project", "api_key"]},
        },
        "required": ["max_runs", "per"],
        "additionalProperties": False,
    },
    PolicyKind.CONCURRENCY: {
        "type": "object",
        "properties": {"max_active": {"type": "integer", "minimum": 1}, "workflow": _SLUG, "agent": _SLUG},
        "required": ["max_active"],
        "additionalProperties": False,
    },
    PolicyKind.MODEL_ALLOWLIST: {
        "type": "object",
        "properties": {"models": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}},
        "required": ["models"],
        "additionalProperties": False,
    },
    PolicyKind.TOOL_ALLOWLIST: {
        "type": "object",
        "properties": {"tools": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}},
        "required": ["tools"],
        "additionalProperties": False,
    },
    PolicyKind.APPROVAL: {
        "type": "object",
        "properties": {
            "risk_class": {"enum": list(RiskClass.values)},
            "tools": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
            "min_cost_usd": {"type": "number", "minimum": 0},
            "role": {"enum": ["owner", "admin", "developer", "viewer"]},
        },
        "anyOf": [{"required": ["risk_class"]}, {"required": ["tools"]}, {"required": ["min_cost_usd"]}],
        "additionalProperties": False,
    },
}

EXAMPLES: dict[str, dict] = {
    PolicyKind.BUDGET: {"amount_usd": 25, "window": "day", "timezone": "Europe/Berlin"},
    PolicyKind.RUN_CEILING: {"max_usd": 0.5, "max_tokens": 200000},
    PolicyKind.RATE_LIMIT: {"max_runs": 60, "per": "minute", "scope": "project"},
    PolicyKind.CONCURRENCY: {"max_active": 2, "workflow": "nightly-digest"},
    PolicyKind.MODEL_ALLOWLIST: {"models": ["openai/gpt-4o-mini", "anthropic/*"]},
    PolicyKind.TOOL_ALLOWLIST: {"tools": ["search", "calc"]},
    PolicyKind.APPROVAL: {"risk_class": "destructive", "role": "admin"},
}

_ANY_OF_HINT = {
    PolicyKind.RUN_CEILING: "Give max_usd, max_tokens or both.",
    PolicyKind.APPROVAL: "Give at least one of risk_class, tools or min_cost_usd.",
}


def _schema_errors(kind: str, config: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMAS[kind])
    errors = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
        if error.validator == "anyOf" and not error.absolute_path:
            errors.append(_ANY_OF_HINT[kind])
        elif error.validator == "required" and not error.absolute_path:
            # One error per missing key, each saying "'x' is a required property": name the key first.
            missing = [name for name in error.validator_value if name not in config and repr(name) in error.message]
            errors.extend(f"{name}: required, e.g. {json.dumps(EXAMPLES[kind][name])}." for name in missing)
        elif error.validator == "additionalProperties":
            allowed = ", ".join(SCHEMAS[kind]["properties"])
            unknown = sorted(set(error.instance) - set(SCHEMAS[kind]["properties"]))
            errors.extend(f"{name}: unknown key; {kind} takes {allowed}." for name in unknown)
        else:
            where = "/".join(map(str, error.absolute_path))
            errors.append(f"{where}: {error.message}" if where else error.message)
    return errors


def config_errors(kind: str, config: Any) -> list[str]:
    """Everything wrong with ``config`` for ``kind``; empty when it is valid."""
    if kind not in SCHEMAS:
        return []  # the kind field reports an unknown kind
    if not isinstance(config, dict):
        return [f"Must be a JSON object, e.g. {json.dumps(EXAMPLES[kind])}."]
    errors = _schema_errors(kind, config)
    errors += [
        f"{key}: at most {PLACES} decimal places (the ledger keeps micro-dollars)."
        for key in MONEY_KEYS
        if key in SCHEMAS[kind]["properties"] and too_precise(config.get(key))
    ]
    if kind == PolicyKind.BUDGET and not errors:
        if config["window"] == Window.ROLLING and "days" not in config:
            errors.append('days: a rolling window needs its length in days, e.g. {"window": "rolling", "days": 7}.')
        if config["window"] != Window.ROLLING and "days" in config:
            errors.append("days: only a rolling window takes days.")
        if config.get("timezone", "UTC") not in _timezones():
            errors.append(f"timezone: {config['timezone']!r} is not an IANA timezone, e.g. Europe/Berlin.")
    return errors


_TIMEZONES: set[str] = set()


def _timezones() -> set[str]:
    if not _TIMEZONES:
        _TIMEZONES.update(available_timezones() | {"UTC"})
    return _TIMEZONES
