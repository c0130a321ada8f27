"""One watcher per web process, fanning new rows out to the streams open in it.

The hub reads RunEvent and Notice rows of every project past its position, once per wake-up,
and offers each to every stream, which keeps those of its scope. Wake-ups come from PostgreSQL
(``LISTEN``; writers ``NOTIFY`` in their transaction, delivered on commit: see channel.py),
and from a timer: the only source on SQLite, a safety net on PostgreSQL (a notification lost
while the listener reconnects, holes to give up). So a write costs one read per web process,
however many streams are open; a stream reads the database itself only to catch up on resume.
"""

import asyncio
import contextlib
import dataclasses
import logging
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import psycopg
from django.conf import settings
from django.db import close_old_connections, connection
from psycopg.conninfo import make_conninfo

from .channel import CHANNEL
from .cursor import Cursor, Position
from .selectors import EVENTS, NOTICES, Message, Scope, newest_ids, read_new

log = logging.getLogger(__name__)
BATCH = 500
START_WINDOW = 1000  # ids below the newest that may still be in flight when a process starts
READY_TIMEOUT = 10.0
_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="live-read")
_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = weakref.WeakKeyDictionary()


async def in_thread(fn, *args):
    """Run a database read off the event loop, in a small pool of its own: a stream holds no
    connection between reads, and the pool bounds how many the web process opens for them."""
    return await asyncio.get_running_loop().run_in_executor(_executor, partial(_closing, fn, *args))


def _closing(fn, *args):
    try:
        return fn(*args)
    finally:
        close_old_connections()  # with the connection pool: hands the connection back


def read_batch(position: Position, ttl: float) -> tuple[list[Message], Position, bool]:
    """New rows of both logs past ``position``, in the order they were written, each with the
    position after it; the new position; and whether more are waiting."""
    now = time.monotonic()
    rows = {source: read_new(source, getattr(position, source), BATCH) for source in (EVENTS, NOTICES)}
    cursors = {source: getattr(position, source).advanced([m.id for m in rows[source]], now, ttl) for source in rows}
    at = {EVENTS: position.events, NOTICES: position.notices}
    out = []
    for source, index in _interleaved(rows[EVENTS], rows[NOTICES]):
        at[source] = cursors[source][index]
        out.append(dataclasses.replace(rows[source][index], position=Position(at[EVENTS], at[NOTICES])))
    final = Position(*(cursors[s][-1] if cursors[s] else getattr(position, s).settled(now, ttl) for s in rows))
    return out, final, any(len(found) == BATCH for found in rows.values())


def _interleaved(events: list[Message], notices: list[Message]):
    """(source, index) of both lists merged by time written, each list kept in its own (id)
    order: a message's position must never pass a row of its log not sent before it."""
    e = n = 0
    while e < len(events) or n < len(notices):
        if n == len(notices) or (e < len(events) and events[e].at <= notices[n].at):
            yield EVENTS, e
            e += 1
        else:
            yield NOTICES, n
            n += 1


def start_position(ttl: float) -> Position:
    """Where a process starts: the newest rows, with the ids just below them that are not
    visible yet taken as holes (transactions in flight)."""
    last_event, last_notice = newest_ids()
    position = Position(Cursor(max(0, last_event - START_WINDOW)), Cursor(max(0, last_notice - START_WINDOW)))
    more = True
    while more:
        _, position, more = read_batch(position, ttl)
    return position


class Subscription:
    """One open stream: the hub puts the messages of its scope in its queue. A stream that
    falls too far behind (a client not reading) gets ``None`` and ends; it resumes from the
    database when it reconnects."""

    def __init__(self, scope: Scope, start: Position, limit: int) -> None:
        self.scope, self.start, self.limit = scope, start, limit
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self.dropped = False

    def offer(self, message: Message) -> None:
        if self.dropped or not self.scope.matches(message):
            return
        if self.queue.qsize() >= self.limit:
            self.dropped = True
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(message)


class Hub:
    def __init__(self) -> None:
        self.subscribers: set[Subscription] = set()
        self.position: Position | None = None
        self.wake = asyncio.Event()
        self.ready = asyncio.Event()  # set while the position is known
        self.wanted = asyncio.Event()  # a stream wants to open
        self.idle_since = time.monotonic()
        self.tasks = [asyncio.create_task(self._run())]
        if connection.vendor == "postgresql":
            self.tasks.append(asyncio.create_task(self._listen()))

    def subscribe(self, scope: Scope) -> Subscription:
        subscription = Subscription(scope, self.position, settings.SPARKOPS_SSE_QUEUE_LIMIT)
        self.subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscribers.discard(subscription)
        if not self.subscribers:
            self.idle_since = time.monotonic()

    async def _run(self) -> None:
        ttl = settings.SPARKOPS_SSE_HOLE_SECONDS
        while True:
            if self.position is None:
                await self.wanted.wait()  # at rest until a stream wants to open
            try:
                if self.position is None:
                    self.position = await in_thread(start_position, ttl)
                    self.ready.set()
                await self._pump(ttl)
            except Exception:
                log.exception("live stream: reading new events failed; retrying")
            self.wanted.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self._patience())
            if self._idle() and not self.wanted.is_set():
                # No stream for SPARKOPS_SSE_IDLE_SECONDS: stop reading. The next stream starts the
                # reader again from the newest rows ("from now"); a resumed one reads its backlog.
                self.ready.clear()
                self.position = None
                log.info(
                    "live stream: no stream open for %ss; the reader is at rest", settings.SPARKOPS_SSE_IDLE_SECONDS
                )

    def _idle(self) -> bool:
        return not self.subscribers and time.monotonic() - self.idle_since >= settings.SPARKOPS_SSE_IDLE_SECONDS

    def _patience(self) -> float:
        """How long to wait for a wake-up: the poll interval, or less when the idle time runs out."""
        if self.subscribers:
            return settings.SPARKOPS_SSE_POLL_SECONDS
        left = self.idle_since + settings.SPARKOPS_SSE_IDLE_SECONDS - time.monotonic()
        return max(0.05, min(settings.SPARKOPS_SSE_POLL_SECONDS, left))

    async def _pump(self, ttl: float) -> None:
        more = True
        while more:
            self.wake.clear()  # a commit from now on wakes us again
            messages, position, more = await in_thread(read_batch, self.position, ttl)
            self.position = position
            for message in messages:
                for subscription in self.subscribers:
                    subscription.offer(message)

    async def _listen(self) -> None:
        """LISTEN on a connection of its own, outside Django's (it lives as long as the process)."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(_conninfo(), autocommit=True) as listener:
                    await listener.execute(f"LISTEN {CHANNEL}")
                    self.wake.set()  # what committed while we were not listening
                    async for _ in listener.notifies():
                        self.wake.set()
            except (psycopg.Error, OSError) as error:
                log.warning("live stream: LISTEN connection lost (%s); reconnecting", error)
            await asyncio.sleep(1.0)


def _conninfo() -> str:
    db = settings.DATABASES["default"]
    params = {"dbname": db["NAME"], "user": db.get("USER"), "password": db.get("PASSWORD"), "host": db.get("HOST")}
    params["port"] = db.get("PORT") or None
    return make_conninfo(**{k: v for k, v in params.items() if v})


async def subscribe(scope: Scope) -> tuple[Hub, Subscription]:
    """A new stream's place at this event loop's hub (started with the first stream)."""
    loop = asyncio.get_running_loop()
    current = _hubs.get(loop)
    if current is None:
        current = _hubs[loop] = Hub()
    while True:
        current.wanted.set()
        await asyncio.wait_for(current.ready.wait(), READY_TIMEOUT)
        if current.position is not None:  # not put to rest while this stream waited
            return current, current.subscribe(scope)
