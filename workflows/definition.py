"""Helpers over a workflow definition, shared by validation, the planner and the run engine. Pure:
no Django, no ORM.

A definition::

    {"steps": [
        {"key": "fetch", "kind": "tool", "tool": "search", "input": {"q": "{{ inputs.topic }}"}},
        {"key": "summarize", "kind": "agent", "agent": "writer", "depends_on": ["fetch"],
         "prompt": "Summarize: {{ steps.fetch.output }}"},
    ]}
"""

import json
from collections.abc import Mapping
from typing import Any

Definition = Mapping[str, Any]
#: ``{"agents": {slug: usable}, "tools": {slug: usable}}`` for a project.
Catalog = Mapping[str, Mapping[str, bool]]


def spec_of(definition: Definition, key: str) -> dict:
    """The step of a valid definition with this key."""
    return next(step for step in definition["steps"] if step["key"] == key)


def key_list(value: Any) -> bool:
    """A list of step keys (that name steps is checked elsewhere)."""
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON: unlike ==, true is not 1 and 1 is not 1.0 (1.0 == 1 == True in Python)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
