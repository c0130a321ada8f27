"""Kombu's filesystem transport, with an atomic publish and race-free queue bindings.

Kombu writes each message straight into its final file name, so a consumer listing the folder
can pick up a file that is still being written and fail with ``JSONDecodeError`` (kombu issue
#1551). We write to a hidden temporary name that consumers never match, then rename it into
place: ``os.replace`` is atomic within one filesystem, so a reader sees the whole message or none.

Kombu also creates an exchange's binding table with ``open("wb")``, which truncates the file
before taking the lock, so a process declaring the same queue at that moment reads an empty
table and fails to decode it. We open without truncating, lock, then rewrite in place.
"""

import os
import uuid
from time import monotonic

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
