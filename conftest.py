import pytest
from django.conf import settings
from django.core.cache import cache
from django.core.cache.backends.redis import RedisCache
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from sparkops.testing import client_for, make_team

# Property tests share two cores with PostgreSQL, Redis and worker processes in CI: judge them on
# what they find, never on how fast an example ran.
hypothesis_settings.register_profile("sparkops", deadline=None, suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile("sparkops")


def _clear_test_cache() -> None:
    # Login failure counters and throttles live in the cache; no test may see another's. On
    # Redis only our prefixed keys go: the broker's queues live in the same database.
    if isinstance(cache, RedisCache):
        client = cache._cache.get_client(write=True)
        keys = list(client.scan_iter(match=f"{settings.CACHES['default']['KEY_PREFIX']}:*", count=1000))
        if keys:
            client.delete(*keys)
    else:
        cache.clear()


@pytest.fixture(autouse=True)
def _clear_cache():
    _clear_test_cache()
    yield
    _clear_test_cache()


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


@pytest.fixture
def engine(engine_inline):
    """engine_inline, with task errors raised in the test rather than swallowed by eager mode."""
    from sparkops.celery import app

    app.conf.task_eager_propagates = True
    yield
    app.conf.task_eager_propagates = False
