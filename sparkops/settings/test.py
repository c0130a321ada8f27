"""Tests: PostgreSQL and Redis when DATABASE_URL / REDIS_URL are set (CI), SQLite otherwise."""

from .base import *  # noqa: F403
from .base import REDIS_URL, STATIC_ROOT

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only; never outside tests
SPARKOPS_REFRESH_COOKIE_SECURE = True
if REDIS_URL:
    # Tests clear their own keys only (conftest.py): a FLUSHDB would also drop the Celery
    # broker's queues and bindings, which share this Redis database.
    CACHES = {"default": {**CACHES["default"], "KEY_PREFIX": "sparkops-test"}}  # noqa: F405
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
CELERY_TASK_ALWAYS_EAGER = False

# SQLite does not create folders, and whitenoise warns about a missing STATIC_ROOT.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
