"""Counters kept in the Django cache, shared by every web and worker process."""

from datetime import timedelta

from django.utils import timezone

from telemetry import cache_metrics


def test_counters_on_the_file_cache_add_up_and_do_not_expire(settings, tmp_path, time_machine):
    # The embedded default's cache: incr there is a get and a set, which would reset the timeout.
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(tmp_path)}
    }
    cache_metrics.add("test:counter", 2)
    cache_metrics.add("test:counter", 3)

    time_machine.move_to(timezone.now() + timedelta(days=1))

    assert cache_metrics.counters(["test:counter", "test:never"]) == {"test:counter": 5, "test:never": 0}
