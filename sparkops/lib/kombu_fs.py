"""Kombu's filesystem transport, with an atomic publish and race-free queue bindings.

Kombu writes each message straight into its final file name, so a consumer listing the folder
can pick up a file that is still being written and fail with ``JSONDecodeError`` (kombu issue
#1551). We write to a hidden temporary name that consumers never match, then rename it into
place: ``os.replace`` is atomic within one filesystem, so a reader sees the whole message or none.

Kombu also creates an exchange's binding table with ``open("wb")``, which truncates the file
before taking the lock, so a process declaring the same queue at that moment reads an empty
table and fails to decode it. We open without truncating, lock, then rewrite in place.

Kombu's virtual transports look for messages once per ``polling_interval`` (a second by default),
so every hop of a run (a step, then the next) waited half a second on average. Ours polls
adaptively: for a second after a message, or while its worker's processes are all busy, it looks
every few milliseconds (a run's next step follows its last within that second); then each empty
look doubles the wait up to a cap, so an idle worker looks twenty times a second (a directory
listing each: no measurable CPU).
"""

import os
import uuid
from queue import Empty
from time import monotonic, sleep

from celery.worker import state as worker_state
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # Consumers keep names whose text after the first dot is "<queue>.msg"; this one has none.
        temporary = os.path.join(self.data_folder_out, f".{uuid.uuid4().hex}-tmp")
        try:
            with open(temporary, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(temporary, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def get_table(self, exchange):
        file = self._exchange_file(exchange)
        try:
            with open(file, "rb") as f:
                filesystem.lock(f, filesystem.LOCK_SH)
                try:
                    content = f.read()
                finally:
                    filesystem.unlock(f)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ChannelError(f"Cannot open {file}") from exc
        # Empty while its creator waits for the lock: no bindings yet.
        return [filesystem.exchange_queue_t(*b) for b in loads(bytes_to_str(content))] if content else []

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        file = self._exchange_file(exchange)
        self.control_folder.mkdir(exist_ok=True)
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        try:
            with open(file, "ab+", buffering=0) as f:  # creates, never truncates before the lock
                filesystem.lock(f, filesystem.LOCK_EX)
                try:
                    f.seek(0)
                    content = f.read()
                    bindings = (
                        [filesystem.exchange_queue_t(*b) for b in loads(bytes_to_str(content))] if content else []
                    )
                    if binding not in bindings:
                        bindings.insert(0, binding)
                        f.seek(0)
                        f.truncate()
                        f.write(str_to_bytes(dumps(bindings)))
                finally:
                    filesystem.unlock(f)
        except OSError as exc:
            raise ChannelError(f"Cannot open {file}") from exc


class Transport(filesystem.Transport):
    Channel = Channel
    # Seconds between looks: the shortest, right after a message, and the cap, once idle.
    polling_interval = 0.005
    max_polling_interval = 0.05
    # Seconds after a message during which the shortest interval holds.
    busy_seconds = 1.0
    _last_message = 0.0

    def __init__(self, client, **kwargs):
        # One folder for both directions, created on first use, so a fresh checkout just works.
        options = client.transport_options
        folder = options.get("data_folder")
        if folder:
            options.setdefault("data_folder_in", folder)
            options.setdefault("data_folder_out", folder)
            options.setdefault("control_folder", os.path.join(folder, "control"))
            os.makedirs(options["control_folder"], exist_ok=True)
        super().__init__(client, **kwargs)

    def drain_events(self, connection, timeout=None):
        """Deliver one message, polling adaptively (see the module's docstring); ``socket.timeout``
        after ``timeout`` seconds without one, as kombu's loop does."""
        started = monotonic()
        get = self.cycle.get
        interval = self.polling_interval
        while True:
            try:
                get(self._deliver, timeout=timeout)
            except Empty:
                waited = monotonic() - started
                if (timeout is not None and waited >= timeout) or _worker_stopping():
                    # A worker told to stop checks between two calls: no need to wait out ``timeout``.
                    raise TimeoutError from None  # socket.timeout, as kombu raises
                sleep(min(interval, timeout - waited) if timeout is not None else interval)
                if self._consuming() and monotonic() - self._last_message > self.busy_seconds:
                    interval = min(interval * 2, self.max_polling_interval)
                else:
                    interval = self.polling_interval  # busy: look again as soon as one may come
            else:
                self._last_message = monotonic()
                return

    def _consuming(self) -> bool:
        """True when every consuming channel could take a message: an empty look means the queue
        is empty (back off), not that the worker is busy (keep looking fast)."""
        return all(channel.qos.can_consume() for channel in self.channels if channel._consumers)


def _worker_stopping() -> bool:
    # Celery's own test: the exit code it stores may be 0, which is not False.
    return worker_state.should_stop is not None and worker_state.should_stop is not False
