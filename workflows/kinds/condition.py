"""A condition step: compares ``left`` and ``right`` with ``op`` and runs its ``then`` or its
``else`` branch; the steps of both wait for it."""

from typing import Any

from ..definition import key_list
from .base import Known, StepKind

OPS = ("==", "!=", "<", "<=", ">", ">=", "contains", "in")
BRANCHES = ("then", "else")


class ConditionKind(StepKind):
    name = "condition"
    fields = frozenset({"left", "op", "right", *BRANCHES})
    required = ("left", "op", "right")
    templated = ("left", "right")

    def check(self, step: dict, known: Known) -> list[str]:
        problems = []
        if "left" in step and not isinstance(step["left"], str):
            problems.append("left: must be a template string.")
        if "op" in step and step["op"] not in OPS:
            problems.append(f"op: must be one of {', '.join(OPS)}.")
        branches = {name: step.get(name, []) for name in BRANCHES}
        for name, keys in branches.items():
            problems += _branch_problems(name, keys, known)
        if all(key_list(keys) for keys in branches.values()):
            if not any(branches.values()):
                problems.append("then/else: name the steps to run in at least one branch.")
            for key in sorted(set(branches["then"]) & set(branches["else"])):
                problems.append(f"then/else: '{key}' cannot be in both branches.")
        return problems

    def chooses(self, step: dict) -> list[str]:
        keys = []
        for name in BRANCHES:
            branch = step.get(name, [])
            keys += branch if key_list(branch) else []
        return keys


def _branch_problems(name: str, keys: Any, known: Known) -> list[str]:
    if not key_list(keys):
        return [f"{name}: must be a list of step keys."]
    return [f"{name}: unknown step '{key}'." for key in keys if key not in known.keys]
