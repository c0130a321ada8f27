"""The live stream's wake-up on PostgreSQL: a transaction that inserts run events or notices sends
one NOTIFY on the stream's channel, delivered at commit and never for a rollback."""

import psycopg
import pytest
from django.conf import settings
from django.db import transaction

from live.channel import CHANNEL
from notices.choices import NoticeType
from notices.services import publish
from runs.engine.transitions import emit, emit_many
from runs.tests.e2e_support import database_url
from runs.tests.factories import bare_run, make_catalog, make_workflow

pytestmark = [
    pytest.mark.skipif(not settings.DATABASE_URL.startswith("postgres"), reason="NOTIFY is PostgreSQL's"),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def listener():
    with psycopg.connect(database_url(), autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")
        yield conn


def heard(conn) -> int:
    return len(list(conn.notifies(timeout=0.5)))


def test_a_transaction_writing_events_and_notices_wakes_the_streams_once_when_it_commits(team, listener):
    make_catalog(team.project)
    run = bare_run(make_workflow(team.project))
    heard(listener)  # what setting up wrote

    with transaction.atomic():
        emit(run.pk, "llm.call", payload={"n": 1})
        emit_many(run.pk, [("llm.call", None, {"n": 2}), ("llm.call", None, {"n": 3})])
        publish(team.project.pk, NoticeType.BUDGET_THRESHOLD, payload={"n": 1})
        assert heard(listener) == 0  # not before the commit

    assert heard(listener) == 1


def test_a_rolled_back_write_wakes_nobody(team, listener):
    make_catalog(team.project)
    run = bare_run(make_workflow(team.project))
    heard(listener)

    with transaction.atomic():
        emit(run.pk, "llm.call", payload={"n": 1})
        transaction.set_rollback(True)

    assert heard(listener) == 0
