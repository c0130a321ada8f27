"""Reads of the two logs a stream carries: RunEvent (each run's own log) and Notice (what ops
are told about), turned into SSE messages. The database is the source: wake-ups only say when
to read."""

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Q, QuerySet

from notices.choices import NoticeType
from notices.models import Notice
from runs.choices import EventType
from runs.models import RunEvent

from .cursor import Cursor, Position

EVENTS, NOTICES = "events", "notices"
SOURCES = {EVENTS: "run", NOTICES: "notice"}  # the `source` of a message, per log
EVENT_TYPES = frozenset(EventType.values)
NOTICE_TYPES = frozenset(NoticeType.values)
_SUBJECT = ("status", "input_tokens", "output_tokens", "cost_usd")
_RUN_FIELDS = [f"run__{name}" for name in ("project_id", *_SUBJECT)]
_STEP_FIELDS = [f"step__{name}" for name in ("key", *_SUBJECT)]


@dataclass(frozen=True)
class Scope:
    """What one stream may and wants to see: its projects (never empty), one run, some types."""

    projects: frozenset[uuid.UUID]
    run: uuid.UUID | None = None
    types: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset((EVENTS, NOTICES))

    def reads(self, source: str) -> bool:
        known = EVENT_TYPES if source == EVENTS else NOTICE_TYPES
        return source in self.sources and (not self.types or bool(self.types & known))

    def matches(self, message: "Message") -> bool:
        return (
            message.project in self.projects
            and (self.run is None or message.run == self.run)
            and (not self.types or message.type in self.types)
            and message.source in self.sources
        )


@dataclass(frozen=True)
class Message:
    source: str
    id: int
    project: uuid.UUID
    run: uuid.UUID | None
    type: str
    data: str  # the JSON of the `data:` line
    at: datetime
    position: Position | None = None  # where the hub was after it (live messages only)

    def frame(self, position: Position) -> bytes:
        return f"id: {position.encode()}\nevent: {self.type}\ndata: {self.data}\n\n".encode()

    @cached_property
    def live_frame(self) -> bytes:
        """The frame at the hub's position: the same for every stream, so made once."""
        return self.frame(self.position)


# ------------------------------------------------------------------------------ the querysets
def _events() -> QuerySet:
    fields = ["id", "sequence", "type", "payload", "created_at", "run_id", "step_id", *_RUN_FIELDS, *_STEP_FIELDS]
    return RunEvent.objects.select_related("run", "step").only(*fields).order_by("id")


def _notices() -> QuerySet:
    fields = ["id", "project_id", "type", "payload", "created_at", "run_id", "step_id", "schedule_id"]
    return Notice.objects.select_related("run", "step").only(*fields, *_RUN_FIELDS, *_STEP_FIELDS).order_by("id")


_QUERYSETS = {EVENTS: _events, NOTICES: _notices}


def _after(cursor: Cursor) -> Q:
    """Rows this position has not passed: past its last id, or in one of its holes."""
    return Q(id__gt=cursor.last) | Q(id__in=list(cursor.holes)) if cursor.holes else Q(id__gt=cursor.last)


def _scoped(source: str, scope: Scope) -> QuerySet:
    project = "run__project_id" if source == EVENTS else "project_id"
    rows = _QUERYSETS[source]().filter(**{f"{project}__in": scope.projects})
    if scope.run is not None:
        rows = rows.filter(run_id=scope.run)
    if scope.types:
        rows = rows.filter(type__in=scope.types)
    return rows


# ------------------------------------------------------------------------------ reads
def newest_ids() -> tuple[int, int]:
    """The highest id of each log, where a process starts watching."""
    last = [_QUERYSETS[s]().values_list("id", flat=True).order_by("-id").first() or 0 for s in (EVENTS, NOTICES)]
    return last[0], last[1]


def read_new(source: str, cursor: Cursor, limit: int) -> list[Message]:
    """Rows of every project this position has not passed, oldest first (at most ``limit``)."""
    return [_message(source, row) for row in _QUERYSETS[source]().filter(_after(cursor))[:limit]]


def read_backlog(source: str, scope: Scope, since: Cursor, upto: Cursor, after_id: int, limit: int) -> list[Message]:
    """The scope's rows that ``since`` has not passed and ``upto`` has, above ``after_id``."""
    rows = _scoped(source, scope).filter(_after(since), id__gt=after_id, id__lte=upto.last)
    if upto.holes:
        rows = rows.exclude(id__in=list(upto.holes))
    return [_message(source, row) for row in rows[:limit]]


# ------------------------------------------------------------------------------ messages
def _message(source: str, row) -> Message:
    run = row.run if row.run_id else None
    project = run.project_id if source == EVENTS else row.project_id
    data = {"source": SOURCES[source], "id": row.id, "type": row.type, "project": project, "run": row.run_id}
    if source == EVENTS:
        data["sequence"] = row.sequence
    else:
        data["schedule"] = row.schedule_id
    data |= _figures(row.step if row.step_id else None, run)
    data |= {"payload": row.payload, "at": row.created_at}
    text = json.dumps(data, cls=DjangoJSONEncoder, separators=(",", ":"))
    return Message(source, row.id, project, row.run_id, row.type, text, row.created_at)


def _figures(step, run) -> dict:
    """Status, tokens and cost of the step the row is about, else of its run, as they are now."""
    subject = step or run
    figures = {"step": step.key if step else None}
    if subject is None:
        return figures | {"status": None, "input_tokens": None, "output_tokens": None, "cost_usd": None}
    return figures | {name: getattr(subject, name) for name in _SUBJECT}
