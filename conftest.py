import pytest
from django.core.cache import cache

from sparkops.testing import client_for, make_team


@pytest.fixture(autouse=True)
def _clear_cache():
    # Login failure counters and throttles live in the cache; no test may see another's.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def team(db):
    """A project with an owner, admin, developer and viewer, and an outsider in another project."""
    return make_team()


@pytest.fixture
def api_client():
    """An unauthenticated API client."""
    return client_for()


@pytest.fixture
def engine_inline(transactional_db):
    """Celery tasks run in the test's own thread as soon as they are enqueued (after commit), so a
    run goes as far as it can before the call that started it returns."""
    from sparkops.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False
