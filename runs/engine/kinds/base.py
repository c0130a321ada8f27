"""What every step kind tells the engine: its name (the one ``workflows.kinds`` validates) and how
to run an attempt of it."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..context import StepContext


@dataclass(frozen=True)
class StepKind:
    name: str
    #: One attempt: the step's output, or StepFailed / StepHeld / StepCancelled. A kind that sets
    #: ``ctx.untaken`` rules those steps out: they are skipped with its success.
    run: Callable[[StepContext], Any]
    #: A parking kind runs nothing: ``run`` returns the payload of its step.waiting_approval event
    #: and the step waits there for a person's decision (which settles it).
    parks: bool = False
