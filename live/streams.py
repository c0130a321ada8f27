"""One stream: catch up from the database where the client left off, then follow the hub."""

import asyncio
import time
from collections.abc import AsyncIterator

from .cursor import Position
from .hub import BATCH, in_thread, subscribe
from .selectors import EVENTS, NOTICES, Message, Scope, read_backlog

RETRY_MS = 2000  # how long a browser's EventSource waits before it reconnects


async def stream(
    scope: Scope, since: Position | None, *, heartbeat: float, duration: float
) -> AsyncIterator[str | bytes]:
    """The text of an SSE response. ``since`` is where the client left off (None: from now)."""
    watcher, subscription = await subscribe(scope)
    try:
        yield f"retry: {RETRY_MS}\n\n"
        start = subscription.start
        if since is not None:
            async for frame in _backlog(scope, since, start):
                yield frame
            since = None if start.covers(since) else since
        # An id with no data moves the client's Last-Event-ID without an event: a reconnect
        # before the first event still resumes from here.
        yield f"id: {(start if since is None else since.union(start)).encode()}\n\n"
        async for frame in _follow(subscription.queue, since, heartbeat, time.monotonic() + duration):
            yield frame
    finally:
        watcher.unsubscribe(subscription)


async def _backlog(scope: Scope, since: Position, start: Position) -> AsyncIterator[bytes]:
    """The scope's rows ``since`` had not passed and the hub had when the stream subscribed
    (the later ones come through the hub), each log in id order."""
    for source in (EVENTS, NOTICES):
        mine, upto = getattr(since, source), getattr(start, source)
        after = 0
        while scope.reads(source):
            rows = await in_thread(read_backlog, source, scope, mine, upto, after, BATCH)
            for message in rows:
                yield message.frame(_at(since, source, mine.union(upto.upto(message.id))))
            if len(rows) < BATCH:
                break
            after = rows[-1].id
        since = _at(since, source, mine.union(upto))


def _at(position: Position, source: str, cursor) -> Position:
    return Position(cursor, position.notices) if source == EVENTS else Position(position.events, cursor)


async def _follow(queue: asyncio.Queue, since: Position | None, heartbeat: float, deadline: float):
    """Live messages until ``deadline``, a comment after each ``heartbeat`` of silence. The
    messages waiting together go out as one write: at hundreds of streams per process, the cost
    is per write, not per byte."""
    while (left := deadline - time.monotonic()) > 0:
        try:
            async with asyncio.timeout(min(heartbeat, left)):
                waiting = [await queue.get()]
        except TimeoutError:
            if deadline - time.monotonic() > 0:
                yield b": keep-alive\n\n"
            continue
        while not queue.empty():
            waiting.append(queue.get_nowait())
        frames, since = _frames(waiting, since)
        if frames:
            yield b"".join(frames)
        if None in waiting:
            yield b": too far behind; reconnect to resume\n\n"
            return


def _frames(messages: list[Message | None], since: Position | None) -> tuple[list[bytes], Position | None]:
    frames = []
    for message in messages:
        if message is None:
            break
        if since is not None and getattr(since, message.source).passed(message.id):
            continue  # sent before, by the stream this one resumes
        frames.append(message.live_frame if since is None else message.frame(since.union(message.position)))
        if since is not None and message.position.covers(since):
            since = None
    return frames, since
