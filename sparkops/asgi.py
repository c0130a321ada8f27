"""ASGI entry point (uvicorn; gunicorn with uvicorn workers in production)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sparkops.settings.local")

django_application = get_asgi_application()

from sparkops.api.middleware import RequestBodyLimitASGI  # noqa: E402 - needs the app registry set up

# Bodies with no Content-Length (chunked) are capped here, before Django reads them.
application = RequestBodyLimitASGI(django_application)
