"""Management commands act on the command channel.

Django has no hook around a command, so ``BaseCommand.execute`` (what ``manage.py`` and
``call_command`` both go through) is wrapped once, at startup: every command, ours or Django's
(``createsuperuser``, ``loaddata``), is attributed to ``manage.py <name>``."""

import functools

from django.core.management.base import BaseCommand

from .choices import Channel
from .context import acting


def mark_commands() -> None:
    if getattr(BaseCommand.execute, "_audited", False):
        return
    original = BaseCommand.execute

    @functools.wraps(original)
    def execute(self, *args, **options):
        name = type(self).__module__.rsplit(".", 1)[-1]
        with acting(Channel.COMMAND, label=f"manage.py {name}"):
            return original(self, *args, **options)

    execute._audited = True
    BaseCommand.execute = execute
