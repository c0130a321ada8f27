"""What every tool executor speaks. Executors run one call and never touch run rows."""

import abc
import functools
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment

MAX_EXPONENT = 100  # 10**100 is plenty; 9**9**9 would hang the worker
# Chained powers and squarings stay small at each step yet grow without bound; results stay well
# under Python's 4300-digit int-to-str limit, so they can be printed and stored as JSON.
MAX_RESULT_BITS = 4096


def power_error(base: Any, exponent: Any) -> str | None:
    """Why ``base ** exponent`` is refused, or None when it is cheap to compute."""
    if not isinstance(exponent, int | float) or not isinstance(base, int | float):
        return None
    if abs(exponent) > MAX_EXPONENT:
        return f"Exponents above {MAX_EXPONENT} are refused."
    if isinstance(base, int) and isinstance(exponent, int) and exponent * abs(base).bit_length() > MAX_RESULT_BITS:
        return "The result would be too large."
    return None


def _product_error(left: Any, right: Any) -> str | None:
    for sequence, times in ((left, right), (right, left)):
        if isinstance(sequence, str | list | tuple) and isinstance(times, int) and len(sequence) * times > MAX_RANGE:
            return f"Repeating a value past {MAX_RANGE} items is refused."
    if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_RESULT_BITS:
        return "The result would be too large."
    return None


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox refuses unsafe attributes but not unbounded work: ``{{ 9 ** (9 ** 9) }}``
    would hang the worker and ``{{ 'x' * 10 ** 10 }}`` exhaust its memory. Intercepting the two
    operators also stops Jinja from folding them at compile time."""

    intercepted_binops = frozenset({"**", "*"})

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        problem = power_error(left, right) if operator == "**" else _product_error(left, right)
        if problem:
            raise SecurityError(problem)
        return super().call_binop(context, operator, left, right)


# Sandboxed: templates can read what they are given and call nothing unsafe; never eval.
TEMPLATES = _BoundedSandbox(undefined=StrictUndefined, autoescape=False)


@dataclass
class ToolResult:
    output: Any
    latency_ms: float


@dataclass(frozen=True)
class CallLimits:
    """What the caller allows one call: ``timeout`` seconds at most (a step's remaining time; the
    tool's own timeout still applies when shorter), and the ``idempotency_key`` an HTTP tool
    sends so the receiver can drop a repeat of the same call."""

    timeout: float | None = None
    idempotency_key: str = ""
    #: The run making the call, when a run makes it: sandbox tools work in that run's sandbox.
    run_id: str = ""


NO_LIMITS = CallLimits()


class ToolError(Exception):
    """A failed tool call; ``permanent`` says whether trying again could help, ``timed_out``
    whether it ran out of the time it was given."""

    def __init__(self, message: str, *, permanent: bool, retry_after: float | None = None, timed_out: bool = False):
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after
        self.timed_out = timed_out


class ToolExecutor(abc.ABC):
    kind: str = ""
    #: The least risk class a tool of this kind may be given (approval policies act on it).
    risk_floor: str = "read"
    #: The kind knows its input schema: a tool saved without one gets it.
    knows_input_schema: bool = False

    @abc.abstractmethod
    def validate_config(self, config: dict) -> dict[str, str]:
        """Field -> message for each problem in a tool's config; empty when valid."""

    @abc.abstractmethod
    def execute(self, *, config: dict, arguments: dict, secret: str = "", limits: CallLimits = NO_LIMITS) -> ToolResult:
        """Run the tool once with validated arguments, within ``limits``. Raises ToolError."""

    def default_input_schema(self, config: dict) -> dict:
        return {"type": "object"}


def render(template: str, context: dict) -> str:
    try:
        return _compiled(template).render(context)
    except TemplateError as exc:
        raise ToolError(f"Template error: {exc}", permanent=True) from exc


@functools.lru_cache(maxsize=1024)
def _compiled(template: str):
    # Compiling dominates rendering; tools render the same few templates on every call.
    return TEMPLATES.from_string(template)


def template_errors(template: str) -> str | None:
    try:
        TEMPLATES.parse(template)
    except TemplateError as exc:
        return str(exc)
    return None
