"""schedules/cron.py: parsing with field-level messages, matching, and fire times across daylight saving
time (the documented rule: a missing local time fires shifted forward by the jump, a repeated one
fires once at its first occurrence, and an instant never fires twice)."""

from datetime import UTC, date, datetime, time, timedelta
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schedules import cron

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def fires(expression: str, tz: ZoneInfo, after: datetime, count: int) -> list[datetime]:
    return list(islice(cron.fires_after(cron.parse(expression), tz, after), count))


def fires_between(expression: str, tz: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    found = []
    for instant in cron.fires_after(cron.parse(expression), tz, start):
        if instant > end:
            return found
        found.append(instant)
    return found


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# ------------------------------------------------------------------------------
# Validation: one message per wrong field
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expression", "errors"),
    [
        ("", {"expression": "Five fields are needed (minute hour day month weekday); got 0."}),
        ("0 9 * *", {"expression": "Five fields are needed (minute hour day month weekday); got 4."}),
        ("0 9 * * * *", {"expression": "Five fields are needed (minute hour day month weekday); got 6."}),
        ("60 * * * *", {"minute": "60 is outside 0-59."}),
        ("* 24 * * *", {"hour": "24 is outside 0-23."}),
        ("* * 0 * *", {"day_of_month": "0 is outside 1-31."}),
        ("* * 32 * *", {"day_of_month": "32 is outside 1-31."}),
        ("* * * 13 *", {"month": "13 is outside 1-12."}),
        ("* * * 0 *", {"month": "0 is outside 1-12."}),
        ("* * * * 8", {"day_of_week": "8 is outside 0-7."}),
        ("* * * foo *", {"month": "'foo' is not a number or a name."}),
        ("* * * * funday", {"day_of_week": "'funday' is not a number or a name."}),
        ("x * * * *", {"minute": "'x' is not a number."}),
        ("* * mon * *", {"day_of_month": "'mon' is not a number."}),
        ("30-10 * * * *", {"minute": "range '30-10' runs backwards."}),
        ("* * * dec-jan *", {"month": "range 'dec-jan' runs backwards."}),
        ("*/0 * * * *", {"minute": "0 is outside 1-59."}),
        ("*/x * * * *", {"minute": "'x' is not a number."}),
        ("1,,2 * * * *", {"minute": "'' is not a number."}),
        ("-5 * * * *", {"minute": "'' is not a number."}),
        (
            "60 24 0 13 8",
            {
                "minute": "60 is outside 0-59.",
                "hour": "24 is outside 0-23.",
                "day_of_month": "0 is outside 1-31.",
                "month": "13 is outside 1-12.",
                "day_of_week": "8 is outside 0-7.",
            },
        ),
    ],
)
def test_it_rejects_a_bad_expression_with_a_message_per_field(expression, errors):
    with pytest.raises(cron.CronError) as caught:
        cron.parse(expression)
    assert caught.value.errors == errors


def test_a_cron_error_reads_as_its_fields_and_messages():
    with pytest.raises(cron.CronError, match=r"^minute: 60 is outside 0-59\.; hour: 24 is outside 0-23\.$"):
        cron.parse("60 24 * * *")


# ------------------------------------------------------------------------------
# Fields: names, 7 = Sunday, steps, lists
# ------------------------------------------------------------------------------
def test_it_reads_month_and_weekday_names_in_any_case():
    parsed = cron.parse("0 9 * JAN,jul Mon-FRI")
    assert parsed.months == {1, 7}
    assert parsed.weekdays == {1, 2, 3, 4, 5}
    assert cron.parse("0 9 * * sun,sat").weekdays == {0, 6}
    assert cron.parse("0 9 * jun-aug *").months == {6, 7, 8}


def test_seven_is_sunday_like_zero():
    assert cron.parse("0 0 * * 7").weekdays == {0}
    assert cron.parse("0 0 * * 5-7").weekdays == {5, 6, 0}
    assert cron.parse("0 0 * * 0,7").weekdays == {0}
    sunday = date(2026, 5, 3)
    assert cron.parse("0 0 * * 7").matches_day(sunday)
    assert not cron.parse("0 0 * * 7").matches_day(sunday + timedelta(days=1))


def test_steps_ranges_and_lists():
    assert cron.parse("*/15 * * * *").minutes == {0, 15, 30, 45}
    assert cron.parse("10-30/10 * * * *").minutes == {10, 20, 30}
    assert cron.parse("5/20 * * * *").minutes == {5, 25, 45}
    assert cron.parse("0 */6 * * *").hours == {0, 6, 12, 18}
    assert cron.parse("1,5,10-12 * * * *").minutes == {1, 5, 10, 11, 12}
    assert cron.parse("0 0 */10 * *").days == {1, 11, 21, 31}
    assert cron.parse("0 0 * * mon-fri/2").weekdays == {1, 3, 5}
    assert cron.parse("* * * * *").minutes == frozenset(range(60))


def test_local_times_are_every_hour_and_minute_combination_in_order():
    assert cron.parse("15,45 9,17 * * *").local_times() == [time(9, 15), time(9, 45), time(17, 15), time(17, 45)]


# ------------------------------------------------------------------------------
# Day of month and day of week
# ------------------------------------------------------------------------------
def test_when_both_day_fields_are_restricted_either_one_matches():
    first_or_monday = cron.parse("0 0 1 * mon")
    assert first_or_monday.matches_day(date(2026, 7, 1))  # a Wednesday, the 1st
    assert first_or_monday.matches_day(date(2026, 7, 6))  # a Monday, the 6th
    assert not first_or_monday.matches_day(date(2026, 7, 7))  # a Tuesday, the 7th


def test_when_one_day_field_is_a_star_the_other_decides():
    assert cron.parse("0 0 13 * *").matches_day(date(2026, 7, 13))
    assert not cron.parse("0 0 13 * *").matches_day(date(2026, 7, 14))
    assert cron.parse("0 0 * * fri").matches_day(date(2026, 11, 13))
    assert not cron.parse("0 0 * * fri").matches_day(date(2026, 11, 12))


def test_the_month_restricts_both_day_fields():
    assert not cron.parse("0 0 1 jan mon").matches_day(date(2026, 7, 6))  # a Monday, but July
    assert cron.parse("0 0 1 jan mon").matches_day(date(2026, 1, 5))  # a Monday in January


def test_fires_follow_the_or_rule_day_by_day():
    found = fires("0 0 13 * fri", ZoneInfo("UTC"), utc(2026, 11, 1), 5)
    assert [f.date() for f in found] == [
        date(2026, 11, 6),  # Friday
        date(2026, 11, 13),  # Friday the 13th, once
        date(2026, 11, 20),
        date(2026, 11, 27),
        date(2026, 12, 4),
    ]
    assert fires("0 0 13 * fri", ZoneInfo("UTC"), utc(2026, 12, 5), 2)[0].date() == date(2026, 12, 11)


# ------------------------------------------------------------------------------
# Fire times
# ------------------------------------------------------------------------------
def test_fires_are_strictly_after_the_given_instant():
    assert fires("0 9 * * *", ZoneInfo("UTC"), utc(2026, 5, 4, 9), 2) == [utc(2026, 5, 5, 9), utc(2026, 5, 6, 9)]
    assert fires("0 9 * * *", ZoneInfo("UTC"), utc(2026, 5, 4, 8, 59, 59), 1) == [utc(2026, 5, 4, 9)]


def test_weekday_fires_in_a_timezone_are_utc_instants_of_local_times():
    found = fires("0 9 * * mon-fri", BERLIN, utc(2026, 5, 1, 12), 5)  # a Friday afternoon
    assert [f.astimezone(BERLIN).strftime("%a %H:%M") for f in found] == [
        "Mon 09:00",
        "Tue 09:00",
        "Wed 09:00",
        "Thu 09:00",
        "Fri 09:00",
    ]
    assert found[0] == utc(2026, 5, 4, 7)  # CEST is UTC+2
    assert all(f.tzinfo is UTC for f in found)


def test_an_impossible_date_never_fires():
    assert fires("0 0 30 feb *", ZoneInfo("UTC"), utc(2026, 1, 1), 1) == []


def test_a_rare_date_is_found_years_ahead():
    # Leap days only: the search looks far enough ahead not to give up on them.
    found = fires("0 0 29 2 *", ZoneInfo("UTC"), utc(2026, 3, 1), 2)
    assert found == [utc(2028, 2, 29), utc(2032, 2, 29)]


# ------------------------------------------------------------------------------
# Daylight saving time
# ------------------------------------------------------------------------------
def test_a_daily_berlin_schedule_fires_once_every_local_day_across_both_changes():
    for start, end in [(utc(2026, 3, 26), utc(2026, 4, 2)), (utc(2026, 10, 22), utc(2026, 10, 29))]:
        found = fires_between("0 9 * * *", BERLIN, start, end)
        local = [f.astimezone(BERLIN) for f in found]
        assert [moment.time() for moment in local] == [time(9, 0)] * 7
        assert [moment.date() for moment in local] == [start.date() + timedelta(days=n) for n in range(7)]


def test_a_missing_local_time_fires_shifted_forward_by_the_jump():
    found = fires_between("30 2 * * *", NEW_YORK, utc(2026, 3, 7), utc(2026, 3, 10))
    assert found == [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7, 30), utc(2026, 3, 9, 6, 30)]
    assert found[1].astimezone(NEW_YORK).isoformat() == "2026-03-08T03:30:00-04:00"


def test_a_repeated_local_time_fires_once_at_its_first_occurrence():
    found = fires_between("30 1 * * *", NEW_YORK, utc(2026, 10, 31), utc(2026, 11, 3))
    assert found == [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]
    assert found[1].astimezone(NEW_YORK).isoformat() == "2026-11-01T01:30:00-04:00"


def test_every_minute_across_the_spring_jump_fires_each_instant_once():
    # Local 02:00-02:59 does not exist; shifted forward, it lands on 03:00-03:59 EDT, which exist too.
    found = fires_between("* * * * *", NEW_YORK, utc(2026, 3, 8, 6), utc(2026, 3, 8, 8))
    assert found == [utc(2026, 3, 8, 6, 1) + timedelta(minutes=n) for n in range(120)]


def test_every_minute_across_the_autumn_repeat_skips_the_second_pass():
    found = fires_between("* * * * *", NEW_YORK, utc(2026, 11, 1, 4, 59), utc(2026, 11, 1, 7, 59))
    local = [f.astimezone(NEW_YORK) for f in found]
    # 01:00-01:59 EDT fire; the same wall times again in EST do not; 02:00 EST goes on.
    assert len(found) == 60 + 60
    assert found[59] == utc(2026, 11, 1, 5, 59)
    assert found[60] == utc(2026, 11, 1, 7, 0)
    assert all(moment.fold == 0 for moment in local)


def test_a_half_hour_jump_shifts_by_half_an_hour():
    lord_howe = ZoneInfo("Australia/Lord_Howe")  # jumps 02:00 -> 02:30 on 2026-10-04
    found = fires_between("15 2 * * *", lord_howe, utc(2026, 10, 1), utc(2026, 10, 5))
    assert [f.astimezone(lord_howe).strftime("%m-%d %H:%M") for f in found] == [
        "10-02 02:15",
        "10-03 02:15",
        "10-04 02:45",
        "10-05 02:15",
    ]


# ------------------------------------------------------------------------------
# Timezones
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kathmandu"])
def test_it_accepts_iana_timezones(name):
    assert cron.is_timezone(name)
    assert cron.zone(name).key == name


@pytest.mark.parametrize("name", ["", "Mars/Olympus_Mons", "Europe/Berln", "../../etc/passwd", "+02:00"])
def test_it_rejects_unknown_timezones_with_a_message(name):
    assert not cron.is_timezone(name)
    with pytest.raises(cron.CronError) as caught:
        cron.zone(name)
    assert caught.value.errors == {"timezone": f"Unknown timezone {name!r}; use an IANA name such as Europe/Berlin."}


# ------------------------------------------------------------------------------
# Description
# ------------------------------------------------------------------------------
def test_it_describes_an_expression_in_words():
    assert cron.describe("0 9 * * mon-fri") == "At 09:00, Monday through Friday"
    assert cron.describe("*/15 * * * *") == "Every 15 minutes"


# ------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------
BOUNDS = {"minute": (0, 59), "hour": (0, 23), "dom": (1, 31), "month": (1, 12), "dow": (0, 7)}
MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Sao_Paulo",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "America/Santiago",
    "Pacific/Chatham",
]


def _spell(field: str, value: int, draw) -> str:
    if field == "month" and draw(st.booleans()):
        return MONTH_NAMES[value - 1]
    if field == "dow" and value < 7 and draw(st.booleans()):
        return DAY_NAMES[value]
    return str(value)


@st.composite
def cron_items(draw, field: str) -> tuple[str, set[int]]:
    """One item of a field and the values it stands for (worked out here, not by the parser)."""
    low, high = BOUNDS[field]
    kind = draw(st.sampled_from(["value", "range", "star_step", "range_step"]))
    if kind == "value":
        value = draw(st.integers(low, high))
        return _spell(field, value, draw), {value}
    if kind == "star_step":
        step = draw(st.integers(1, high))
        return f"*/{step}", set(range(low, high + 1, step))
    start = draw(st.integers(low, high))
    end = draw(st.integers(start, high))
    text = f"{_spell(field, start, draw)}-{_spell(field, end, draw)}"
    if kind == "range":
        return text, set(range(start, end + 1))
    step = draw(st.integers(1, high))
    return f"{text}/{step}", set(range(start, end + 1, step))


@st.composite
def cron_fields(draw, field: str) -> tuple[str, set[int] | None]:
    """A field's text and its values; None for "*"."""
    if draw(st.integers(0, 3)) == 0:
        return "*", None
    items = draw(st.lists(cron_items(field), min_size=1, max_size=3))
    values = set().union(*(v for _, v in items))
    if field == "dow":
        values = {v % 7 for v in values}
    return ",".join(text for text, _ in items), values


@st.composite
def expressions(draw):
    fields = {name: draw(cron_fields(name)) for name in BOUNDS}
    text = " ".join(fields[name][0] for name in BOUNDS)
    values = {name: values for name, (_, values) in fields.items()}
    # Vixie cron: a day field written with a leading "*" (even "*/2") counts as unrestricted.
    values["restricted"] = {name: not fields[name][0].startswith("*") for name in ("dom", "dow")}
    return text, values


def matches(wall: datetime, values: dict) -> bool:
    """Whether a local wall-clock time matches, by the documented rule (cron's Vixie OR)."""

    def has(name: str, value: int) -> bool:
        return values[name] is None or value in values[name]

    in_dom, in_dow = has("dom", wall.day), has("dow", wall.isoweekday() % 7)
    both_restricted = values["restricted"]["dom"] and values["restricted"]["dow"]
    days = (in_dom or in_dow) if both_restricted else (in_dom and in_dow)
    return has("minute", wall.minute) and has("hour", wall.hour) and has("month", wall.month) and days


def exists(wall: datetime, tz: ZoneInfo) -> bool:
    return wall.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall


instants = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2031, 12, 31), timezones=st.just(UTC))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions(), st.sampled_from(ZONES), instants)
def test_fires_increase_strictly_and_each_matches_the_expression_in_local_time(expression, zone_name, after):
    text, values = expression
    tz = ZoneInfo(zone_name)
    found = fires(text, tz, after, 40)

    assert all(f > after for f in found)
    assert all(earlier < later for earlier, later in pairwise(found))
    for instant in found:
        local = instant.astimezone(tz)
        if matches(local.replace(tzinfo=None), values):
            assert local.fold == 0, (text, zone_name, instant.isoformat())  # a repeated time: the first
            continue
        # Only a slot that does not exist locally may fire elsewhere: read with the offset in force
        # just before the jump, it is a matching wall time that the zone skips.
        before = (instant - timedelta(hours=3)).astimezone(tz).utcoffset()
        nominal = (instant + before).replace(tzinfo=None)
        assert matches(nominal, values), (text, zone_name, instant.isoformat())
        assert not exists(nominal, tz), (text, zone_name, instant.isoformat())


@settings(max_examples=100, deadline=None)
@given(expressions(), st.sampled_from(["UTC", "Asia/Kathmandu"]), instants)
def test_without_daylight_saving_every_matching_minute_fires_and_nothing_else(expression, zone_name, after):
    text, values = expression
    tz = ZoneInfo(zone_name)
    end = after + timedelta(days=2)
    first = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    expected = [
        minute
        for n in range(int((end - first).total_seconds() // 60) + 1)
        if matches((minute := first + timedelta(minutes=n)).astimezone(tz).replace(tzinfo=None), values)
    ]
    assert fires_between(text, tz, after, end) == expected
