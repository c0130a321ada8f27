"""Positions: what a stream passed in each log, holes included, and their text in `id:`."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from live.cursor import BadPosition, Cursor, Position

TTL = 60.0


def test_a_jump_past_missing_ids_leaves_holes_that_a_late_row_fills():
    first, second = Cursor(10).advanced([13, 14], now=0.0, ttl=TTL)
    assert (first.last, set(first.holes)) == (13, {11, 12})
    assert (second.last, set(second.holes)) == (14, {11, 12})
    filled = second.advanced([12], now=1.0, ttl=TTL)[0]
    assert (filled.last, set(filled.holes)) == (14, {11})
    assert not filled.passed(11)
    assert filled.passed(12)


def test_a_hole_missing_longer_than_the_ttl_is_given_up():
    cursor = Cursor(10).advanced([12], now=0.0, ttl=TTL)[0]
    assert set(cursor.settled(now=TTL - 1, ttl=TTL).holes) == {11}
    assert cursor.settled(now=TTL + 1, ttl=TTL).holes == {}


def test_union_keeps_a_hole_only_where_neither_passed_it():
    a = Cursor(20, {15: 0.0, 18: 0.0})
    b = Cursor(25, {18: 0.0, 22: 0.0})
    union = a.union(b)
    assert (union.last, set(union.holes)) == (25, {18, 22})
    assert union == b.union(a)
    assert b.covers(Cursor(17))
    assert not b.covers(Cursor(19))
    assert union.covers(a)
    assert union.covers(b)


def test_upto_forgets_what_was_passed_above():
    cursor = Cursor(30, {12: 0.0, 25: 0.0}).upto(20)
    assert (cursor.last, set(cursor.holes)) == (20, {12})


def test_the_text_of_a_position_round_trips_with_hole_ranges():
    position = Position(Cursor(1042, dict.fromkeys([1038, 1039, 1040, 1001], 0.0)), Cursor(77))
    assert position.encode() == "1042-1001-1038_1040.77"
    back = Position.decode("1042-1001-1038_1040.77")
    assert set(back.events.holes) == {1001, 1038, 1039, 1040}
    assert (back.events.last, back.notices.last, back.notices.holes) == (1042, 77, {})


@pytest.mark.parametrize("text", ["", "12", "a.b", "5-7.0", "5-3_2.0", "10-1_9999.0", "1.2.3", f"{2**64}.0"])
def test_it_refuses_text_that_is_not_a_position(text):
    with pytest.raises(BadPosition):
        Position.decode(text)


@given(st.lists(st.integers(min_value=1, max_value=60), unique=True), st.integers(min_value=0, max_value=60))
def test_reading_rows_in_any_commit_order_passes_exactly_the_rows_read(commits, split):
    """Rows appear in any order (the order their transactions commit); whatever was read in
    batches, the position passes exactly the ids seen, and a resume reads exactly the rest."""
    seen, cursor = set(), Cursor(0)
    for batch in (commits[:split], commits[split:]):
        seen |= set(batch)
        visible = sorted(i for i in seen if not cursor.passed(i))
        cursor = (cursor.advanced(visible, now=0.0, ttl=TTL) or [cursor])[-1]
        assert {i for i in range(1, 61) if cursor.passed(i)} == seen
        assert Position.decode(Position(cursor, Cursor(0)).encode()).events.holes.keys() == cursor.holes.keys()
