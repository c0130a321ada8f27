"""Local development: the embedded default (SQLite + filesystem broker) unless the environment
says otherwise."""

from .base import *  # noqa: F403
from .base import STATIC_ROOT, env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SPARKOPS_REFRESH_COOKIE_SECURE = env.bool("SPARKOPS_REFRESH_COOKIE_SECURE", default=False)
# Readable lines on a terminal; LOG_FORMAT=json to see what production writes.
LOG_FORMAT = env.str("LOG_FORMAT", default="console")
LOGGING["handlers"]["console"]["formatter"] = LOG_FORMAT  # noqa: F405

# SQLite does not create folders, and whitenoise warns about a missing STATIC_ROOT.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
