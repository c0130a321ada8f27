"""Budget windows: where the window holding a moment starts and ends, in the budget's timezone.

Calendar windows start at local midnight. On a day whose midnight does not exist (a DST jump at
00:00, as in America/Santiago), ``fold=0`` maps the missing 00:00 with the offset from before the
jump, which lands on the day's first real instant (01:00 local). On a day whose midnight happens
twice, the window starts at the first one. Windows are half-open: [start, end).
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from .choices import Window


@dataclass(frozen=True)
class Span:
    start: datetime
    end: datetime  # for a rolling window: the moment asked about

    @property
    def length(self) -> timedelta:
        return self.end - self.start


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def window_at(config: dict, now: datetime) -> Span:
    """The window of a budget ``config`` that holds ``now`` (an aware datetime)."""
    kind = config["window"]
    if kind == Window.ROLLING:
        return Span(now - timedelta(days=config["days"]), now)
    zone = ZoneInfo(config.get("timezone") or "UTC")
    today = now.astimezone(zone).date()
    if kind == Window.DAY:
        first, following = today, today + timedelta(days=1)
    elif kind == Window.WEEK:
        first = today - timedelta(days=today.weekday())
        following = first + timedelta(days=7)
    else:
        first = today.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
    return Span(_local_midnight(first, zone), _local_midnight(following, zone))
