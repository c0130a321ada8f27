"""Built-in tools: a small vetted registry of pure functions. Never eval of user input."""

import ast
import contextlib
import math
import operator
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import jsonschema

from .base import MAX_RESULT_BITS, NO_LIMITS, CallLimits, ToolError, ToolExecutor, ToolResult, power_error, render


@dataclass(frozen=True)
class Builtin:
    function: Callable[[dict], object]
    description: str
    input_schema: dict


def _json_extract(arguments: dict):
    """Follow a dotted path ("items.0.name") into JSON data."""
    value = arguments["data"]
    for part in filter(None, arguments["path"].split(".")):
        try:
            value = value[int(part)] if isinstance(value, list) else value[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise ToolError(f"Path {arguments['path']!r} not found at {part!r}.", permanent=True) from None
    return value


def _template(arguments: dict) -> str:
    return render(arguments["template"], arguments.get("values", {}))


_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _checked(_OPERATORS[type(node.op)](left, right))
    raise ToolError(f"Only numbers and + - * / // % ** are allowed, not {type(node).__name__}.", permanent=True)


def _check_power(base: float, exponent: float) -> None:
    if problem := power_error(base, exponent):
        raise ToolError(problem, permanent=True)


def _checked(value) -> float:
    # inf, nan and complex ((-8) ** 0.5) are not JSON numbers; huge ints cannot be printed.
    if isinstance(value, complex) or (isinstance(value, float) and not math.isfinite(value)):
        raise ToolError("The result is not a finite real number.", permanent=True)
    if isinstance(value, int) and value.bit_length() > MAX_RESULT_BITS:
        raise ToolError("The result would be too large.", permanent=True)
    return value


def _arithmetic(arguments: dict) -> float:
    expression = arguments["expression"]
    try:
        tree = ast.parse(expression, mode="eval")
        return _evaluate(tree.body)
    except SyntaxError as exc:
        raise ToolError(f"Not an arithmetic expression: {exc.msg}.", permanent=True) from exc
    except (ZeroDivisionError, OverflowError) as exc:
        raise ToolError(str(exc), permanent=True) from exc


BUILTINS: dict[str, Builtin] = {
    "json_extract": Builtin(
        _json_extract,
        "Extract a value from JSON data by a dotted path, e.g. items.0.name.",
        {
            "type": "object",
            "properties": {"data": {}, "path": {"type": "string"}},
            "required": ["data", "path"],
        },
    ),
    "template": Builtin(
        _template,
        "Render a text template (sandboxed Jinja) with values.",
        {
            "type": "object",
            "properties": {"template": {"type": "string", "maxLength": 20000}, "values": {"type": "object"}},
            "required": ["template"],
        },
    ),
    "arithmetic": Builtin(
        _arithmetic,
        "Evaluate an arithmetic expression of numbers and + - * / // % **.",
        {
            "type": "object",
            "properties": {"expression": {"type": "string", "maxLength": 500}},
            "required": ["expression"],
        },
    ),
}

_VALIDATORS = {name: jsonschema.Draft202012Validator(b.input_schema) for name, b in BUILTINS.items()}


class BuiltinExecutor(ToolExecutor):
    kind = "builtin"
    knows_input_schema = True

    def validate_config(self, config: dict) -> dict[str, str]:
        function = config.get("function")
        if function not in BUILTINS:
            return {"function": f"Unknown built-in {function!r}; one of: {', '.join(sorted(BUILTINS))}."}
        return {}

    def default_input_schema(self, config: dict) -> dict:
        return BUILTINS[config["function"]].input_schema

    def execute(self, *, config: dict, arguments: dict, secret: str = "", limits: CallLimits = NO_LIMITS) -> ToolResult:
        # Built-ins send nothing, so need no idempotency key; they get the caller's time limit.
        builtin = BUILTINS[config["function"]]
        # The tool's own input_schema may be looser than what the function reads; a missing or
        # mistyped argument is a failed call, not a crash.
        problem = jsonschema.exceptions.best_match(_VALIDATORS[config["function"]].iter_errors(arguments))
        if problem is not None:
            raise ToolError(f"Invalid input for {config['function']}: {problem.message}", permanent=True)
        started = time.monotonic()
        try:
            with _time_limit(limits.timeout):
                output = builtin.function(arguments)
        except _OutOfTime:
            message = f"Timed out after {limits.timeout:g}s."
            raise ToolError(message, permanent=False, timed_out=True) from None
        return ToolResult(output=output, latency_ms=(time.monotonic() - started) * 1000)


class _OutOfTime(BaseException):
    """Raised by the alarm; a BaseException so no ``except Exception`` inside Jinja swallows it."""


@contextlib.contextmanager
def _time_limit(seconds: float | None):
    """Interrupt the block after ``seconds``. Input caps bound each operation, not how many a
    template runs: two nested loops over range(100000) take hours. A Celery prefork worker runs
    tasks on its main thread, where an alarm can interrupt them; elsewhere (threads) the block
    runs unbounded."""
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise _OutOfTime

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
