"""Settings for bench/api.py only: the project's own settings (what the bench would otherwise
serve), with a URL conf that adds one bare DRF create beside the product's routes. Nothing here
is loaded by the product; the bench's server serves both endpoints from this module, so they
share the middleware, the authentication classes, the database pool and the workers."""

from sparkops.settings.local import *  # noqa: F403

ROOT_URLCONF = "bench.bare_urls"
