"""How the admin shows statuses, times, durations and money: one place, so every page reads alike."""

from datetime import datetime, timedelta
from decimal import Decimal

from django.utils import timezone
from django.utils.html import format_html

#: Status -> badge colour class (sparkops/static/sparkops/console.css).
TONES = {
    "queued": "idle",
    "pending": "idle",
    "running": "busy",
    "waiting_approval": "wait",
    "cancelling": "wait",
    "succeeded": "good",
    "failed": "bad",
    "cancelled": "off",
    "skipped": "off",
}


def badge(status: str, label: str | None = None) -> str:
    tone = TONES.get(status, "idle")
    return format_html('<span class="badge badge-{}" data-status="{}">{}</span>', tone, status, label or status)


def when(moment: datetime | None) -> str:
    """Local time to the second, e.g. 2026-12-05 09:14:03."""
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S") if moment else "—"


def duration(started: datetime | None, finished: datetime | None) -> str:
    """e.g. 850 ms, 12.4 s, 3 min 05 s, 2 h 04 min; "—" before it started."""
    if started is None:
        return "—"
    return span((finished or timezone.now()) - started)


def span(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def millis(value: float | None) -> str:
    """e.g. 1,250 ms, 33 ms, 0.04 ms."""
    if value is None:
        return "—"
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.2f}".rstrip("0").rstrip(".") + " ms"


def seconds(value: float | None) -> str:
    return "—" if value is None else span(timedelta(seconds=value))


def usd(value: Decimal | None) -> str:
    """Cents for sums of a dollar or more, micro-dollars for cheap calls: $12.50, $0.0142, $0.000011."""
    if value is None:
        return "—"
    if not value:
        return "$0"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    places = 4 if abs(value) >= Decimal("0.01") else 6
    return f"${value:.{places}f}".rstrip("0").rstrip(".")
