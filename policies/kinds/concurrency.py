"""A concurrency limit: at most N runs active at once in the project, or among the runs of one
workflow or using one agent. Judged when a queued run asks for a slot, over the contenders runs
passes in (Slot); "block" holds the run in the queue until a slot is free."""

from ..choices import PolicyKind
from .base import _SLUG, RUN_ACTIONS, SLOT, Contender, Objection, PolicyKindBase, Slot


class Concurrency(PolicyKindBase):
    name = PolicyKind.CONCURRENCY.value
    label = "Concurrency limit"
    schema = {
        "type": "object",
        "properties": {"max_active": {"type": "integer", "minimum": 1}, "workflow": _SLUG, "agent": _SLUG},
        "required": ["max_active"],
        "additionalProperties": False,
    }
    example = {"max_active": 2, "workflow": "nightly-digest"}
    actions = RUN_ACTIONS
    stages = frozenset({SLOT})

    def judge(self, policy, slot: Slot) -> Objection | None:
        """No slot for the run now. Runs ahead in the queue count only when they wait for this
        limit's slot (or nothing yet): one held by another limit will not take this one's slot."""
        if not _in_scope(policy, slot.mine):
            return None
        scoped = [run for run in slot.contenders if _in_scope(policy, run)]
        active = sum(run.holds_slot for run in scoped)
        ahead = sum(
            run.waiting and run.waiting_on in (None, policy.pk) and run.queue_key < slot.mine.queue_key
            for run in scoped
        )
        limit = policy.config["max_active"]
        if active + ahead < limit:
            return None
        return Objection(
            f"Concurrency limit {policy.name!r}: {active} of {limit} runs active, {ahead} ahead in the queue."
        )

    def needs_agents(self, policy) -> bool:
        return bool(policy.config.get("agent"))


def _in_scope(policy, run: Contender) -> bool:
    config = policy.config
    if config.get("workflow") and config["workflow"] != run.workflow_slug:
        return False
    if config.get("agent"):
        return config["agent"] == run.task_agent_slug or config["agent"] in run.agents
    return True
