"""Kombu's filesystem transport, with an atomic publish.

Kombu writes each message straight into its final file name, so a consumer listing the folder
can pick up a file that is still being written and fail with ``JSONDecodeError`` (kombu issue
#1551). We write to a hidden temporary name that consumers never match, then rename it into
place: ``os.replace`` is atomic within one filesystem, so a reader sees the whole message or none.
"""

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


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
