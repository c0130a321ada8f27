"""Enqueueing engine tasks. Always after commit, so a worker never looks for rows it cannot see."""

from django.db import transaction


def _tasks():
    from .. import tasks  # the tasks module imports the engine; import it late

    return tasks


def step_on_commit(step_id: int, *, delay: float = 0) -> None:
    transaction.on_commit(lambda: _tasks().step_execute.apply_async(args=[step_id], countdown=delay or None))


def advance_on_commit(run_id) -> None:
    transaction.on_commit(lambda: _tasks().run_advance.delay(str(run_id)))


def step_now(step_id: int) -> None:
    _tasks().step_execute.delay(step_id)


def advance_now(run_id) -> None:
    _tasks().run_advance.delay(str(run_id))
