"""Local development: the embedded default (SQLite + filesystem broker) unless the environment
says otherwise."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SPARKOPS_REFRESH_COOKIE_SECURE = env.bool("SPARKOPS_REFRESH_COOKIE_SECURE", default=False)
