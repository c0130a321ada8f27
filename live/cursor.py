"""Where a stream is in the two logs it reads, exactly, when transactions commit out of id order.

RunEvent and Notice ids come from PostgreSQL sequences: a transaction takes its ids when it
inserts and shows its rows when it commits, so row 101 can be visible while row 100 is still in
flight (or never commits). "Everything up to id N" would then skip 100 for good. A position is
instead the set of ids a stream has passed: everything up to ``last`` except ``holes``, ids not
yet visible when the stream went past them. A hole is read again until its row appears (it is
sent then, late but never lost) or it has been missing for ``SPARKOPS_SSE_HOLE_SECONDS`` (a
rollback, or a row deleted since). Holes are the in-flight ids of a moment: usually none, a few
under load, so the position fits in the SSE ``id:``, e.g. ``1042-1038_1040.77`` (run events
passed up to 1042 except 1038 to 1040; notices up to 77).

The alternatives we did not take: a commit-ordered number (a global lock in every writing
transaction, serializing the engine) or ``xid8`` snapshots (a column on tables of the apps
below, and a stream held back by the oldest open transaction anywhere on the server).
"""

import re
import time
from dataclasses import dataclass, field

MAX_ID = 2**63 - 1
MAX_HOLES = 5000  # a gap wider than this is a sequence jump or a purge, not transactions in flight
_PART = r"\d{1,19}(?:-\d{1,19}(?:_\d{1,19})?)*"
_POSITION = re.compile(rf"^({_PART})\.({_PART})$")


class BadPosition(ValueError):
    pass


@dataclass
class Cursor:
    """The ids one stream passed in one log: ``last`` and below, except ``holes`` (id -> when it
    was first found missing, on the monotonic clock)."""

    last: int = 0
    holes: dict[int, float] = field(default_factory=dict)

    def passed(self, id_: int) -> bool:
        return id_ <= self.last and id_ not in self.holes

    def upto(self, id_: int) -> "Cursor":
        """This position, forgetting what it passed above ``id_``."""
        last = min(self.last, id_)
        return Cursor(last, {h: t for h, t in self.holes.items() if h <= last})

    def union(self, other: "Cursor") -> "Cursor":
        """What either passed: a hole stays one only where neither passed it."""
        small, large = sorted((self, other), key=lambda c: c.last)
        holes = {h: t for h, t in small.holes.items() if h in large.holes}
        holes.update((h, t) for h, t in large.holes.items() if h > small.last)
        return Cursor(large.last, holes)

    def covers(self, other: "Cursor") -> bool:
        """True when every id ``other`` passed, this one passed too."""
        return other.last <= self.last and all(h in other.holes for h in self.holes if h <= other.last)

    def advanced(self, ids: list[int], now: float, ttl: float) -> list["Cursor"]:
        """The positions after each of ``ids`` (sorted, every id visible past this position and
        its holes), from this one: fillers of holes leave them, a jump past missing ids makes
        holes of them, holes older than ``ttl`` are given up. Positions share their holes until
        one changes (a cursor is never changed in place): rows in a run of ids copy nothing."""
        holes = {h: t for h, t in self.holes.items() if now - t < ttl}
        last, out = self.last, []
        for id_ in ids:
            if id_ in holes:
                holes = {h: t for h, t in holes.items() if h != id_}
            elif id_ > last + 1:
                holes = {**holes, **dict.fromkeys(range(max(last + 1, id_ - MAX_HOLES), id_), now)}
            last = max(last, id_)
            out.append(Cursor(last, holes))
        return out

    def settled(self, now: float, ttl: float) -> "Cursor":
        """This position with the holes older than ``ttl`` given up."""
        return Cursor(self.last, {h: t for h, t in self.holes.items() if now - t < ttl})

    def encode(self) -> str:
        return "-".join([str(self.last), *(_range(a, b) for a, b in _runs(sorted(self.holes)))])

    @classmethod
    def decode(cls, text: str, now: float) -> "Cursor":
        last, *ranges = text.split("-")
        holes: dict[int, float] = {}
        for item in ranges:
            a, _, b = item.partition("_")
            start, end = int(a), int(b or a)
            if not start <= end < int(last) or end - start >= MAX_HOLES or len(holes) >= MAX_HOLES:
                raise BadPosition(text)
            holes.update((h, now) for h in range(start, end + 1))
        if int(last) > MAX_ID:
            raise BadPosition(text)
        return cls(int(last), holes)


def _runs(ids: list[int]):
    start = prev = None
    for id_ in ids:
        if start is None:
            start = prev = id_
        elif id_ == prev + 1:
            prev = id_
        else:
            yield start, prev
            start = prev = id_
    if start is not None:
        yield start, prev


def _range(a: int, b: int) -> str:
    return str(a) if a == b else f"{a}_{b}"


@dataclass
class Position:
    """A stream's place in both logs: run events and notices. Its text is the SSE ``id:``."""

    events: Cursor
    notices: Cursor

    def encode(self) -> str:
        return f"{self.events.encode()}.{self.notices.encode()}"

    @classmethod
    def decode(cls, text: str) -> "Position":
        match = _POSITION.match(text.strip())
        if match is None:
            raise BadPosition(text)
        now = time.monotonic()
        return cls(Cursor.decode(match[1], now), Cursor.decode(match[2], now))

    def union(self, other: "Position") -> "Position":
        return Position(self.events.union(other.events), self.notices.union(other.notices))

    def covers(self, other: "Position") -> bool:
        return self.events.covers(other.events) and self.notices.covers(other.notices)
