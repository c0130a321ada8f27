"""What one attempt of a step works with: its context (run, spec, outputs, deadline, what is held
back to be written with the outcome) and the errors that end it."""

import time
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import F
from jinja2 import TemplateError

from policies import services as policy_services
from workflows import templating

from ..choices import RunStatus
from ..models import Run, RunEvent, RunStep
from .durability import durably
from .transitions import insert_events, reserve_sequences


class StepFailed(Exception):
    """The attempt failed. ``permanent`` ones are not retried."""

    def __init__(self, message: str, *, permanent: bool, kind: str = "StepFailed", retry_after: float | None = None):
        super().__init__(message)
        self.permanent, self.kind, self.retry_after = permanent, kind, retry_after

    def as_error(self) -> dict:
        return {"type": self.kind, "message": str(self), "permanent": self.permanent}


class StepTimedOut(StepFailed):
    """The step's ``timeout_seconds`` ran out: before a call (which is then not made) or during
    one (which was cut at the step's deadline)."""

    def __init__(self, message: str = "The step ran out of time."):
        super().__init__(message, permanent=False, kind="Timeout")


class StepCancelled(Exception):
    """The run is being cancelled; the step stops at this check."""


class StepHeld(Exception):
    """A policy wants a human decision before this call; the step waits for approval and runs
    again from its start once approved."""

    def __init__(self, hit: policy_services.Hit, arguments: Any = None):
        super().__init__(hit.reason)
        self.hit, self.arguments = hit, arguments

    def as_hold(self, previous: dict) -> dict:
        """The step's hold: what waits for a decision (with the tool's arguments, so the approver
        sees the call), numbered per step, and what earlier decisions of this step granted."""
        policy = self.hit.policy
        hold = {
            "round": previous.get("round", 0) + 1,
            "key": self.hit.key,
            "policy": policy.pk if policy else None,
            "policy_name": policy.name if policy else "",
            "reason": self.hit.reason,
            "role": self.hit.role,
            "staff_only": self.hit.staff_only,
            "granted": previous.get("granted", []),
        }
        if self.arguments is not None:
            hold["arguments"] = self.arguments
        return hold


@dataclass
class StepContext:
    run: Run
    step: RunStep
    spec: dict
    outputs: dict[str, Any]
    deadline: float
    #: Steps this attempt rules out (a condition's untaken branch): skipped when it succeeds.
    untaken: list[str] = field(default_factory=list)
    #: Events not yet written; they go out with the next write, in one statement.
    pending: list[tuple] = field(default_factory=list)
    #: Tokens and cost of calls not yet written (the step's last call waits for its outcome).
    totals: dict[str, Any] = field(default_factory=dict)
    #: Ledger entries to settle or write with the next flush.
    spend: list[dict] = field(default_factory=list)
    #: The project's call-level policies, read once per attempt.
    policies: list | None = None
    #: The project's agents, tools, policies and prices, cached per process (catalog.py).
    catalog: Any = None
    #: Tool calls started in this attempt, and which try of the step this is (read on first use):
    #: both go into each call's idempotency key.
    tool_calls: int = 0
    try_number: int | None = None

    def emit(self, type_: str, payload: dict) -> None:
        self.pending.append((type_, self.step, payload))
        self.flush()

    def flush(self) -> None:
        """Write what is held back, accounting and events, in one transaction; through a dropped
        connection too, for the calls it records have happened. A try whose commit reached the
        database but whose answer did not is found written: the retry writes nothing twice."""
        numbered: dict = {}

        def once() -> None:
            if numbered and self._written(numbered["last"]):
                return
            self.write(numbered=numbered)

        durably(once, until=self.step.lease_expires_at)
        self.forget()

    def _written(self, last: int) -> bool:
        """Whether the held-back events were written under the numbers a try took, ``last`` the
        last of them: numbers rolled back with their try may since be another step's."""
        type_, step, _ = self.pending[-1]
        return RunEvent.objects.filter(run_id=self.run.pk, sequence=last, type=type_, step=step).exists()

    def write(
        self,
        *outcome: tuple,
        last: int | None = None,
        step_counted: bool = False,
        later: list | None = None,
        numbered: dict | None = None,
    ) -> None:
        """Write what is held back, then ``outcome`` events, in one transaction. Nothing is
        forgotten here: a caller whose transaction fails tries again with all of it. ``last``: the
        events' numbers, reserved by the caller (``events_due`` of them) with the run's totals
        added (``reserve_sequences(..., totals=ctx.totals)``) when it locked the run;
        ``step_counted``: the caller's update of the step added them to the step's too; ``later``:
        the settled calls' moves of budget totals, for the caller to make last in its transaction
        (policies.services.spend_settle); ``numbered``: where the last event number this write
        takes is noted, for a retry to look for (flush)."""
        events = [*self.pending, *outcome]
        with transaction.atomic(savepoint=False):  # no savepoint when nested: nothing here is caught
            if last is None and (events or self.totals):
                # The run's row before the step's, the order advance and claim lock them in.
                last = reserve_sequences(self.run.pk, len(events), self.totals)
                if numbered is not None:
                    numbered["last"] = last
            if self.totals and not step_counted:
                RunStep.objects.filter(pk=self.step.pk).update(**self.step_increments())
            for entry in self.spend:
                policy_services.spend_settle(**entry, later=later)
            if events:
                insert_events(self.run.pk, last, events)

    def step_increments(self) -> dict:
        """The held-back totals as increments of the step's fields."""
        return {name: F(name) + value for name, value in self.totals.items()}

    def events_due(self, outcome: int) -> int:
        """How many events ``write`` with ``outcome`` events writes."""
        return len(self.pending) + outcome

    def forget(self) -> None:
        """What was held back is written (committed)."""
        self.pending, self.totals, self.spend = [], {}, []

    def render(self, source: str) -> str:
        try:
            return templating.render(source, inputs=self.run.inputs, steps=self.outputs)
        except TemplateError as exc:
            raise StepFailed(f"Template error: {exc}", permanent=True, kind="TemplateError") from exc

    def remaining(self) -> float:
        """Seconds left for the next call, which is bounded by them; none left: StepTimedOut."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise StepTimedOut()
        return left

    def timed_out(self) -> bool:
        return time.monotonic() >= self.deadline

    def check_cancel(self) -> None:
        cancelling = Run.objects.filter(pk=self.run.pk, status=RunStatus.CANCELLING).exists
        if durably(cancelling, until=self.step.lease_expires_at):
            raise StepCancelled()


def save_input(ctx: StepContext, value: dict, **fields) -> None:
    """Note what the step was given; written with the step's outcome (one UPDATE, not two)."""
    ctx.step.input = value
    for name, field_value in fields.items():
        setattr(ctx.step, name, field_value)


def recorded_fields(step: RunStep) -> dict:
    """What an attempt learned about itself, for the UPDATE that records its outcome."""
    return {
        "input": step.input,
        "agent_id": step.agent_id,
        "tool_id": step.tool_id,
        "provider": step.provider,
        "model": step.model,
        "latency_ms": step.latency_ms,
    }
