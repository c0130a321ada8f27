"""Money in policy configs and in messages. Configs are JSON, so amounts arrive as JSON numbers
(floats once decoded); read through ``config_usd`` they become the exact decimal that was written,
because valid amounts have at most 6 decimal places, well inside a float's 15 exact digits.
``usd`` writes an amount for people: exact to the micro-dollar, never a nonzero spend as $0.0000."""

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

#: The ledger's precision (SpendEntry.cost_usd has 6 decimal places): limits are no finer.
PLACES = 6
MICRO = Decimal(1).scaleb(-PLACES)
MONEY_KEYS = ("amount_usd", "max_usd", "min_cost_usd")


def as_decimal(value: Any) -> Decimal | None:
    """The exact decimal a JSON number (or a decimal string stored earlier) stands for."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return Decimal(str(value))  # str(): the float's shortest form, i.e. what was written
    except InvalidOperation:
        return None


def ledger_usd(value: Any) -> Decimal:
    """An amount as the ledger's columns keep it: to the micro-dollar, rounded as PostgreSQL rounds
    numeric; nothing (an empty sum) is 0. Also what a plain statement's sum reads back as, which
    SQLite answers as a float."""
    if value is None:
        return Decimal(0)
    return Decimal(str(value)).quantize(MICRO, rounding=ROUND_HALF_UP)


def config_usd(config: dict, key: str) -> Decimal | None:
    return as_decimal(config.get(key))


def too_precise(value: Any) -> bool:
    amount = as_decimal(value)
    if amount is None or not amount.is_finite():
        return False
    # The exponent, not quantize(): quantizing 1e23 to micro-dollars needs more digits than the
    # decimal context has and raises.
    return amount.normalize().as_tuple().exponent < MICRO.as_tuple().exponent


def usd(value: Decimal) -> str:
    """``$``-less text of an amount: at least cents, up to micro-dollars, trailing zeros trimmed
    (0.6 → 0.60, 0.000049 → 0.000049). A nonzero amount below a micro-dollar is shown as it is."""
    rounded = value.quantize(MICRO, rounding=ROUND_HALF_UP)
    if rounded == 0 and value != 0:
        return format(value.normalize(), "f")
    text = format(rounded, "f").rstrip("0")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"
