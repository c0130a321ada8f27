"""ASGI entry point (uvicorn; gunicorn with uvicorn workers in production)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sparkops.settings.local")
# Requests borrow PostgreSQL connections from a pool per process (see DATABASE_POOL in settings):
# an ASGI server runs sync views in per-request threads, and persistent connections would leak.
os.environ.setdefault("DATABASE_POOL", "true")

django_application = get_asgi_application()

from sparkops.api.middleware import RequestBodyLimitASGI  # noqa: E402 - needs the app registry set up

# Bodies with no Content-Length (chunked) are capped here, before Django reads them.
application = RequestBodyLimitASGI(django_application)
