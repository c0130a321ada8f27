"""Tests: PostgreSQL and Redis when DATABASE_URL / REDIS_URL are set (CI), SQLite otherwise."""

from .base import *  # noqa: F403
from .base import REDIS_URL, STATIC_ROOT

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only; never outside tests
SPARKOPS_REFRESH_COOKIE_SECURE = True
if not REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
CELERY_TASK_ALWAYS_EAGER = False

# SQLite does not create folders, and whitenoise warns about a missing STATIC_ROOT.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
