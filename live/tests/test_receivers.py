"""The stream's wake-up: one NOTIFY per transaction that writes events or notices, however many it
writes; a rolled-back transaction's marker goes with it, so the next one notifies again."""

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from notices.choices import NoticeType
from notices.services import publish

pytestmark = pytest.mark.django_db(transaction=True)  # real commits and rollbacks


@transaction.atomic
def publish_then_fail(project_id) -> None:
    publish(project_id, NoticeType.SCHEDULE_PAUSED)
    raise RuntimeError


def notifies(queries) -> int:
    return sum("pg_notify" in q["sql"] for q in queries.captured_queries)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="NOTIFY is PostgreSQL's; SQLite polls")
def test_one_notify_per_transaction_and_again_after_a_rollback(team):
    with CaptureQueriesContext(connection) as one, transaction.atomic():
        publish(team.project.pk, NoticeType.SCHEDULE_PAUSED)
        publish(team.project.pk, NoticeType.BUDGET_THRESHOLD)
    assert notifies(one) == 1

    with pytest.raises(RuntimeError):
        publish_then_fail(team.project.pk)
    with CaptureQueriesContext(connection) as after, transaction.atomic():
        publish(team.project.pk, NoticeType.SCHEDULE_PAUSED)
    assert notifies(after) == 1
