"""Cron expressions in a timezone: parsing with field-level messages, and fire times. Pure code.

Five fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or jan-dec), day of
week (0-6 or sun-sat, 7 is Sunday too). Each field: ``*``, a value, a range ``a-b``, a step
``*/n`` or ``a-b/n``, or a comma list of these. When both day fields are restricted a day matches
either (as in Vixie cron).

Daylight saving time, the rule we follow (documented for users in the README):
- a local time that does not exist (clocks jump forward) fires shifted forward by the jump:
  02:30 on a day New York skips 02:00-03:00 fires at 03:30 EDT;
- a local time that happens twice (clocks fall back) fires once, at its first occurrence;
- each fire time is a UTC instant, and two local slots that land on the same instant fire once.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

FIELDS = ("minute", "hour", "day_of_month", "month", "day_of_week")
BOUNDS = {"minute": (0, 59), "hour": (0, 23), "day_of_month": (1, 31), "month": (1, 12), "day_of_week": (0, 7)}
NAMES = {
    "month": {
        m: n
        for n, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)
    },
    "day_of_week": {d: n for n, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
}
# Far enough for "0 0 29 2 1" (a Monday the 29th of February); keeps a bad schedule from spinning.
SEARCH_DAYS = 366 * 30


class CronError(ValueError):
    """``errors`` maps a field name (or "expression") to its message."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool
    parts: tuple[str, ...]

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def local_times(self) -> list[time]:
        return [time(h, m) for h in sorted(self.hours) for m in sorted(self.minutes)]


def parse(expression: str) -> Cron:
    parts = (expression or "").split()
    if len(parts) != 5:
        raise CronError({"expression": f"Five fields are needed (minute hour day month weekday); got {len(parts)}."})
    values, errors = {}, {}
    for name, part in zip(FIELDS, parts, strict=True):
        try:
            values[name] = _field(name, part.lower())
        except ValueError as exc:
            errors[name] = str(exc)
    if errors:
        raise CronError(errors)
    weekdays = frozenset(d % 7 for d in values["day_of_week"])
    return Cron(
        values["minute"],
        values["hour"],
        values["day_of_month"],
        values["month"],
        weekdays,
        # As in Vixie cron, a day field that starts with "*" (even "*/2") counts as unrestricted.
        days_restricted=not parts[2].startswith("*"),
        weekdays_restricted=not parts[4].startswith("*"),
        parts=tuple(parts),
    )


def _field(name: str, text: str) -> frozenset[int]:
    low, high = BOUNDS[name]
    found: set[int] = set()
    for item in text.split(","):
        found |= _item(name, item, low, high)
    return frozenset(found)


def _item(name: str, item: str, low: int, high: int) -> set[int]:
    span, _, step_text = item.partition("/")
    step = _number(name, step_text, 1, high) if step_text else 1
    if span == "*":
        start, end = low, high
    elif "-" in span:
        start_text, _, end_text = span.partition("-")
        start, end = _number(name, start_text, low, high), _number(name, end_text, low, high)
        if start > end:
            raise ValueError(f"range {span!r} runs backwards.")
    else:
        start = _number(name, span, low, high)
        end = high if step_text else start
    return set(range(start, end + 1, step))


def _number(name: str, text: str, low: int, high: int) -> int:
    value = NAMES.get(name, {}).get(text)
    if value is None:
        if not text.isdigit():
            raise ValueError(f"{text!r} is not a number{' or a name' if name in NAMES else ''}.")
        value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{value} is outside {low}-{high}.")
    return value


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError({"timezone": f"Unknown timezone {name!r}; use an IANA name such as Europe/Berlin."}) from None


def is_timezone(name: str) -> bool:
    return name in available_timezones()


def _instant(day: date, at: time, tz: ZoneInfo) -> datetime:
    # fold=0: an ambiguous time is its first occurrence; a missing one is shifted forward by the
    # jump (zoneinfo reads it with the offset in force before the change).
    local = datetime.combine(day, at, tzinfo=tz).replace(fold=0)
    return local.astimezone(UTC)


def fires_after(cron: Cron, tz: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Fire instants (UTC) strictly after ``after``, in order, each once."""
    day = after.astimezone(tz).date() - timedelta(days=1)  # a jump can move a slot across midnight
    last = None
    for _ in range(SEARCH_DAYS):
        if cron.matches_day(day):
            for instant in sorted({_instant(day, at, tz) for at in cron.local_times()}):
                if instant > after and (last is None or instant > last):
                    last = instant
                    yield instant
        day += timedelta(days=1)


def describe(expression: str) -> str:
    """A sentence for people, e.g. "At 09:00 AM, Monday through Friday"."""
    from cron_descriptor import Options, get_description

    options = Options()
    options.use_24hour_time_format = True
    try:
        return get_description(expression, options)
    except Exception:  # noqa: BLE001 - a description is a nicety; the parser already validated
        return expression
