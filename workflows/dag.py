"""A workflow definition is a DAG of steps (see ``definition``). The graph and the planner live here,
as pure code: no Django, no ORM, so the API, the admin and the run engine share one set of rules.
Validation is ``validation``; what each step kind adds is ``kinds``.

Edges: a step waits for every step in its ``depends_on`` and for any step that chooses between
branches naming it (a condition's ``then`` or ``else``: a branch runs after the condition that
chooses it).
"""

import heapq
from collections.abc import Iterable, Mapping
from typing import Any

from . import kinds
from .definition import Definition, key_list, spec_of

# Step statuses the planner reads (the run engine owns the full set).
PENDING = "pending"
SUCCEEDED = "succeeded"
SKIPPED = "skipped"


class CycleError(ValueError):
    def __init__(self, cycle: list[str]):
        self.cycle = cycle
        super().__init__(f"cycle: {' -> '.join(cycle)}")


# ------------------------------------------------------------------------------
# The graph
# ------------------------------------------------------------------------------
def dependency_map(steps: Iterable[Mapping], known: Mapping[str, Any]) -> dict[str, list[str]]:
    """key -> the keys it waits for. Tolerant of bad input (it is also used while validating):
    entries that are not known keys are left out."""
    deps: dict[str, list[str]] = {}
    for step in steps:
        listed = step.get("depends_on", [])
        deps[step["key"]] = [key for key in listed if key in known] if key_list(listed) else []
    for step in steps:
        kind = kinds.get(step.get("kind"))
        for key in kind.chooses(step) if kind else []:
            if key in deps and step["key"] not in deps[key]:
                deps[key].append(step["key"])
    return deps


def dependencies(definition: Definition) -> dict[str, list[str]]:
    """For a valid definition: each step's key -> the keys it waits for (its depends_on, plus any
    condition naming it in then/else), in definition order."""
    steps = definition["steps"]
    return dependency_map(steps, {step["key"]: step for step in steps})


def find_cycles(deps: Mapping[str, list[str]]) -> list[list[str]]:
    """Cycles met by a depth-first walk, each as [a, b, ..., a] where a waits for b. Iterative, so
    a long chain of steps cannot exhaust Python's recursion limit."""
    state: dict[str, int] = {}  # absent: unseen, 1: on the current path, 2: done
    cycles = []
    for root in deps:
        if root in state:
            continue
        path, stack = [root], [iter(deps[root])]
        state[root] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                cycles.append([*path[path.index(child) :], child])
            elif child not in state:
                state[child] = 1
                path.append(child)
                stack.append(iter(deps[child]))
    return cycles


def ancestors(deps: Mapping[str, list[str]], key: Any) -> set[str]:
    """Every step that must finish before ``key`` starts (excluding itself, even within a cycle)."""
    seen: set[str] = set()
    todo = list(deps.get(key, []))
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(deps.get(current, []))
    seen.discard(key)
    return seen


def topological_order(definition: Definition) -> list[str]:
    """Step keys so that each comes after everything it waits for; ties keep definition order.
    Raises CycleError naming a cycle when there is none."""
    deps = dependencies(definition)
    position = {key: i for i, key in enumerate(deps)}
    waiting = {key: len(set(keys)) for key, keys in deps.items()}
    dependents: dict[str, list[str]] = {key: [] for key in deps}
    for key, keys in deps.items():
        for needed in set(keys):
            dependents[needed].append(key)
    heap = [position[key] for key, count in waiting.items() if count == 0]
    heapq.heapify(heap)
    order: list[str] = []
    keys = list(deps)
    while heap:
        key = keys[heapq.heappop(heap)]
        order.append(key)
        for dependent in dependents[key]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(heap, position[dependent])
    if len(order) < len(keys):
        raise CycleError(find_cycles(deps)[0])
    return order


# ------------------------------------------------------------------------------
# Planning: which steps run next. The rule, for the run engine:
#   - A step is *ready* when it is pending (or has no status yet) and every step it waits for
#     has succeeded.
#   - A condition chooses a branch: the engine marks the steps of the branch not taken as skipped
#     (``untaken_branch``).
#   - A pending step that waits for a skipped step is skipped too (``steps_to_skip``), so an untaken
#     branch skips everything downstream of it, joins included (Airflow's default, all_success).
#   - A failed (or cancelled) step leaves the steps waiting for it pending: they never become
#     ready, and the engine ends the run.
# ------------------------------------------------------------------------------
def _is_pending(statuses: Mapping[str, str], key: str) -> bool:
    return statuses.get(key, PENDING) == PENDING


def ready_steps(definition: Definition, statuses: Mapping[str, str]) -> list[str]:
    """Keys of the steps to start now, in definition order (see the rule above)."""
    return [
        key
        for key, waits_for in dependencies(definition).items()
        if _is_pending(statuses, key) and all(statuses.get(needed) == SUCCEEDED for needed in waits_for)
    ]


def steps_to_skip(definition: Definition, statuses: Mapping[str, str]) -> list[str]:
    """Keys of pending steps that can never run because a step they wait for, directly or through
    other pending steps, was skipped. In topological order."""
    deps = dependencies(definition)
    skipped = {key for key, status in statuses.items() if status == SKIPPED}
    found = []
    for key in topological_order(definition):
        if _is_pending(statuses, key) and any(needed in skipped for needed in deps[key]):
            skipped.add(key)
            found.append(key)
    return found


def untaken_branch(definition: Definition, condition_key: str, outcome: bool) -> list[str]:
    """The steps a condition rules out: its ``else`` when it held, its ``then`` when it did not."""
    return list(spec_of(definition, condition_key).get("else" if outcome else "then", []))


# ------------------------------------------------------------------------------
# Comparing versions
# ------------------------------------------------------------------------------
def step_changes(old: Definition, new: Definition) -> dict[str, list[str]]:
    """Step keys added, removed and changed (in any field) between two valid definitions."""
    before = {step["key"]: step for step in old.get("steps", [])}
    after = {step["key"]: step for step in new.get("steps", [])}
    return {
        "added": [key for key in after if key not in before],
        "removed": [key for key in before if key not in after],
        "changed": [key for key in after if key in before and after[key] != before[key]],
    }
