"""Notices are written in their cause's transaction, and receivers hear of them inside it."""

import pytest
from django.db import transaction

from notices.choices import NoticeType
from notices.models import Notice
from notices.services import publish
from notices.signals import published
from runs.signals import events_written
from runs.tests.factories import agent_step, event_types, make_catalog, make_workflow, start


class _Boom(Exception):
    pass


@pytest.mark.django_db
def test_a_notice_rolls_back_with_its_cause_and_receivers_hear_it_inside(team):
    heard = []

    def receiver(sender, notice, **kwargs):
        heard.append((notice.type, transaction.get_connection().in_atomic_block))

    published.connect(receiver)
    try:
        with pytest.raises(_Boom), transaction.atomic():  # noqa: PT012 - the rollback is what is tested
            publish(team.project.pk, NoticeType.SCHEDULE_PAUSED, payload={"reason": "x"})
            raise _Boom
        assert Notice.objects.count() == 0
        notice = publish(team.project.pk, NoticeType.BUDGET_THRESHOLD, payload={"percent": 80})
    finally:
        published.disconnect(receiver)
    assert heard == [("schedule.paused", True), ("budget.threshold", True)]
    assert Notice.objects.get().pk == notice.pk


def test_the_engine_tells_receivers_of_every_event_it_writes_in_order(engine, team):
    make_catalog(team.project)
    workflow = make_workflow(team.project, agent_step("a"), agent_step("b", depends_on=["a"]))
    heard = []

    def receiver(sender, run_id, events, **kwargs):
        assert transaction.get_connection().in_atomic_block
        heard.extend((event.run_id, event.sequence, event.type) for event in events)

    events_written.connect(receiver)
    try:
        run = start(workflow, {"name": "Ada"})
    finally:
        events_written.disconnect(receiver)
    assert [type_ for _, _, type_ in heard] == event_types(run)
    assert [sequence for _, sequence, _ in heard] == list(range(1, len(heard) + 1))
    assert {run_id for run_id, _, _ in heard} == {run.pk}
