"""Settings shared by every environment.

The environment is read here, and only here, through django-environ. With no environment at all
the project runs on the embedded default: SQLite and a filesystem Celery broker, nothing to
install but Python packages. ``DATABASE_URL`` switches to PostgreSQL and ``REDIS_URL`` switches
the broker, result backend and cache to Redis.
"""

from datetime import timedelta
from pathlib import Path

import environ
from celery.schedules import crontab
from corsheaders.defaults import default_headers as default_cors_headers

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
# A local .env is a convenience for development; real deployments set the environment.
environ.Env.read_env(env.str("SPARKOPS_ENV_FILE", default=str(BASE_DIR / ".env")), overwrite=False)

# Local state of the embedded default: SQLite file, broker folder, cache, collected static.
VAR_DIR = Path(env.str("SPARKOPS_VAR_DIR", default=str(BASE_DIR / "var")))

# ------------------------------------------------------------------------------
# Core
# ------------------------------------------------------------------------------
DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="insecure-local-only-secret-key-change-me-please-0123456789")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
ROOT_URLCONF = "sparkops.urls"
WSGI_APPLICATION = "sparkops.wsgi.application"
ASGI_APPLICATION = "sparkops.asgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

SPARKOPS_APP_NAME = "Spark-Ops Control Plane"

# ------------------------------------------------------------------------------
# Applications
# ------------------------------------------------------------------------------
DJANGO_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
]
THIRD_PARTY_APPS = [
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "corsheaders",
    "django_celery_beat",
    "django_structlog",
]
LOCAL_APPS = [
    "sparkops",
    "audit",
    "accounts",
    "projects",
    "agents",
    "workflows",
    "policies",
    "runs",
    "schedules",
    "notices",
    "webhooks",
    "taskboard",
    "telemetry",
    "live",
]
INSTALLED_APPS = DJANGO_APPS + THIRD_PARTY_APPS + LOCAL_APPS

MIDDLEWARE = [
    "telemetry.middleware.RequestLatencyMiddleware",  # first, so it times all the others
    "django_structlog.middlewares.RequestMiddleware",  # request_id (X-Request-ID) on every line
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "sparkops.api.middleware.ApiResponseMiddleware",  # JSON errors and no-store on /api/
    "sparkops.api.middleware.RequestBodyLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "audit.middleware.AuditContextMiddleware",  # who acts, for the audit trail: after the session user
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "sparkops" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# ------------------------------------------------------------------------------
# Database
# ------------------------------------------------------------------------------
DATABASE_URL = env.str("DATABASE_URL", default="")
if DATABASE_URL:
    DATABASES = {"default": env.db_url_config(DATABASE_URL)}
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # The ASGI web server runs each request's sync code in a thread of its own: a persistent
    # connection per thread piles up backends until PostgreSQL refuses clients. There, requests
    # borrow from a pool per process (sparkops/asgi.py turns it on) and give the connection back
    # when they end. Workers and beat run one task at a time per process: one persistent,
    # health-checked connection each is the right number.
    DATABASE_POOL = env.bool("DATABASE_POOL", default=False) and DATABASE_URL.startswith("postgres")
    if DATABASE_POOL:
        DATABASES["default"]["CONN_MAX_AGE"] = 0  # "closing" returns the connection to the pool
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=2),
            "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=10),
            # A request waiting longer for a connection gets 503 database_unavailable.
            "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
        }
    else:
        DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
else:
    # Web, worker and beat write to one SQLite file at once. Django's default deferred
    # transactions upgrade to a write lock mid-transaction and fail with "database is locked"
    # instead of waiting; IMMEDIATE takes the lock up front so busy_timeout can queue writers.
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "sparkops.sqlite3",
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;",
            },
        }
    }
# Never ATOMIC_REQUESTS: with IMMEDIATE transactions every request would hold SQLite's write lock.

# ------------------------------------------------------------------------------
# Cache and broker
# ------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
# Seconds a Redis command (cache or broker) may wait on a Redis that is down or frozen, so a
# request never hangs on it: cache reads and writes fail, publishes are re-sent by the reaper.
REDIS_SOCKET_TIMEOUT = env.float("SPARKOPS_REDIS_SOCKET_TIMEOUT", default=1.0)
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_timeout": REDIS_SOCKET_TIMEOUT, "socket_connect_timeout": REDIS_SOCKET_TIMEOUT},
        }
    }
else:
    # Shared by every local process (login throttling must see the web server's counts).
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# ------------------------------------------------------------------------------
# Auth
# ------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

SPARKOPS_REGISTRATION_OPEN = env.bool("SPARKOPS_REGISTRATION_OPEN", default=True)
# Failed logins: at most N per account (by email, known or not) and M per client address within
# the window; past that, logins are refused, even with the right password, until it cools off.
SPARKOPS_LOGIN_MAX_FAILURES_PER_ACCOUNT = env.int("SPARKOPS_LOGIN_MAX_FAILURES_PER_ACCOUNT", default=5)
SPARKOPS_LOGIN_MAX_FAILURES_PER_CLIENT = env.int("SPARKOPS_LOGIN_MAX_FAILURES_PER_CLIENT", default=20)
SPARKOPS_LOGIN_LOCKOUT_SECONDS = env.int("SPARKOPS_LOGIN_LOCKOUT_SECONDS", default=900)
# Reverse proxies (CIDRs) whose X-Forwarded-For is believed: the login lockout, throttles and the
# metrics network check then see the client's address instead of the proxy's. Empty: none.
SPARKOPS_TRUSTED_PROXIES = env.list("SPARKOPS_TRUSTED_PROXIES", default=[])
SPARKOPS_REFRESH_COOKIE_NAME = "sparkops_refresh"
SPARKOPS_REFRESH_COOKIE_SECURE = env.bool("SPARKOPS_REFRESH_COOKIE_SECURE", default=True)
SPARKOPS_REFRESH_COOKIE_PATH = "/api/v1/auth/"

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=10)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=7)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": True,
    "ALGORITHM": "HS256",
    # A key of its own, so rotating DJANGO_SECRET_KEY and JWT keys are independent decisions.
    "SIGNING_KEY": env.str("JWT_SIGNING_KEY", default="insecure-local-only-jwt-signing-key-change-me-0123456789"),
    "AUTH_HEADER_TYPES": ("Bearer",),
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "user_id",
}

# ------------------------------------------------------------------------------
# REST framework and API docs
# ------------------------------------------------------------------------------
SPARKOPS_MAX_PAGE_SIZE = 200
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.JWTAuthentication",
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "sparkops.api.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "sparkops.api.ordering.StrictOrderingFilter",
    ],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": ["sparkops.api.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "sparkops.api.schema.ErrorAutoSchema",
    "EXCEPTION_HANDLER": "sparkops.api.exceptions.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_THROTTLE_RATES": {"register": env.str("SPARKOPS_REGISTER_RATE", default="30/hour")},
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Spark-Ops Control Plane API",
    "DESCRIPTION": "Projects, agents, workflows, runs, schedules and policies for agentic AI work.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "ENUM_NAME_OVERRIDES": {
        "RoleEnum": "sparkops.roles.Role",
        "RunStatusEnum": "runs.choices.RunStatus",
        "StepStatusEnum": "runs.choices.StepStatus",
        "AgentStatusEnum": "agents.choices.AgentStatus",
        "HealthStatusEnum": "agents.choices.HealthStatus",
        "EndpointKindEnum": "webhooks.choices.EndpointKind",
        "DeliveryStatusEnum": "webhooks.choices.DeliveryStatus",
        "NoticeTypeEnum": "notices.choices.NoticeType",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "sparkops.api.schema.add_error_responses",
    ],
}

# Request bodies larger than this are refused with 413 before any parsing.
SPARKOPS_MAX_REQUEST_BODY_BYTES = env.int("SPARKOPS_MAX_REQUEST_BODY_BYTES", default=1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = SPARKOPS_MAX_REQUEST_BODY_BYTES
# Deeper JSON bodies are refused with a 400 (sparkops.api.parsers); none we accept needs more.
SPARKOPS_MAX_JSON_DEPTH = 64

# ------------------------------------------------------------------------------
# CORS
# ------------------------------------------------------------------------------
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=["http://localhost:3000"])
CORS_ALLOW_CREDENTIALS = True  # only ever for the origins listed above
CORS_URLS_REGEX = r"^/(api|health).*$"
# Beyond the defaults, the request headers the API reads (an API key, the idempotency key of a
# run, where a live stream resumes, the request id) and the response headers a browser client must
# see (to back off from a 429 or 503; the request id to quote).
CORS_ALLOW_HEADERS = (*default_cors_headers, "idempotency-key", "x-api-key", "last-event-id", "x-request-id")
CORS_EXPOSE_HEADERS = ["Retry-After", "X-Request-ID"]

# ------------------------------------------------------------------------------
# Static files (served by the app itself through whitenoise)
# ------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Without collectstatic (local runs and tests) whitenoise serves straight from the finders.
WHITENOISE_USE_FINDERS = True

# ------------------------------------------------------------------------------
# Celery
# ------------------------------------------------------------------------------
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
    # Longer than any step may run, so Redis never redelivers a message still being worked on.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=7200),
        # A publish to a down or frozen Redis fails within these (runs/engine/dispatch.py).
        "socket_timeout": REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": REDIS_SOCKET_TIMEOUT,
        # One connection attempt per publish, not kombu's retries for up to 4 s: the worker's
        # consumer reconnects with its own loop (broker_connection_max_retries).
        "max_retries": 0,
    }
else:
    CELERY_BROKER_URL = "filesystem://localhost//"  # the host part only quiets a kombu warning
    # Our filesystem transport publishes atomically (write + rename); kombu's own can be read
    # half-written under load.
    CELERY_BROKER_TRANSPORT = "sparkops.lib.kombu_fs:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder": str(VAR_DIR / "broker")}
    CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True  # the database is the source of truth, not task results
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Past the longest step a workflow may set (timeout_seconds up to 3600, every call bounded by it)
# plus its lease margin and the outcome write: a time limit never cuts a step short of its own
# timeout, and never kills a task whose step is still inside its lease.
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=3700)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=3760)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fix-up closes the database connection before and after every task (a new
# PostgreSQL session per task) unless this is set; it then recycles the connection every N tasks.
# sparkops/celery.py checks the kept connection's health and age before each task instead.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
CELERY_TIMEZONE = "UTC"
# django-celery-beat's DatabaseScheduler, with a heartbeat on its tick (telemetry/beat.py).
CELERY_BEAT_SCHEDULER = "telemetry.beat:Scheduler"
# A running step is presumed lost with its worker this long after its timeout; the reaper then
# hands it to another worker.
# Output tokens a call may produce when its agent sets no max_tokens: part of the estimate that
# budgets and run ceilings reserve before each call.
SPARKOPS_DEFAULT_MAX_OUTPUT_TOKENS = env.int("SPARKOPS_DEFAULT_MAX_OUTPUT_TOKENS", default=4096)
SPARKOPS_LEASE_MARGIN_SECONDS = env.float("SPARKOPS_LEASE_MARGIN_SECONDS", default=30.0)
# A worker told to stop (SIGTERM) lets its running steps finish for this long, then stops them and
# hands them back (runs/shutdown.py). Keep the orchestrator's grace (compose stop_grace_period)
# a little longer.
SPARKOPS_WORKER_STOP_GRACE_SECONDS = env.float("SPARKOPS_WORKER_STOP_GRACE_SECONDS", default=60.0)
# Days each kind of history is kept unless a project says otherwise (0: kept forever). Spend
# entries are the ledger: they are never pruned inside an open budget window, nor their runs.
SPARKOPS_RETENTION_DAYS = {
    "run_events": env.int("SPARKOPS_RETENTION_RUN_EVENTS_DAYS", default=90),
    "schedule_fires": env.int("SPARKOPS_RETENTION_SCHEDULE_FIRES_DAYS", default=90),
    "policy_decisions": env.int("SPARKOPS_RETENTION_POLICY_DECISIONS_DAYS", default=180),
    "finished_runs": env.int("SPARKOPS_RETENTION_FINISHED_RUNS_DAYS", default=0),
}
#: Rows one DELETE removes: short statements, short locks.
SPARKOPS_PRUNE_BATCH_SIZE = env.int("SPARKOPS_PRUNE_BATCH_SIZE", default=500)
# System jobs, upserted by name into django-celery-beat at beat start; users' schedules are
# separate rows that this never touches.
SPARKOPS_REAP_SECONDS = env.float("SPARKOPS_REAP_SECONDS", default=30.0)
# Hourly roll-ups of finished runs (telemetry/rollups.py): how often beat rolls the hours just
# sealed and counts runs that finished since, and how far back the first tick ever reaches (older
# hours: `manage.py rollup_runs --since <date>`).
SPARKOPS_ROLLUP_SECONDS = env.float("SPARKOPS_ROLLUP_SECONDS", default=300.0)
SPARKOPS_ROLLUP_FIRST_DAYS = env.int("SPARKOPS_ROLLUP_FIRST_DAYS", default=8)
# How long the admin dashboard's charts are kept in the cache (0: read afresh on every view).
SPARKOPS_DASHBOARD_CACHE_SECONDS = env.int("SPARKOPS_DASHBOARD_CACHE_SECONDS", default=60)
CELERY_BEAT_SCHEDULE = {
    "runs-reap": {"task": "runs.reap", "schedule": SPARKOPS_REAP_SECONDS},
    # Retention: old run events, fires, decisions and finished runs go in small batches, nightly.
    "retention-prune": {"task": "schedules.prune", "schedule": crontab(minute=17, hour=3)},
    # Hourly roll-ups of runs for GET /api/v1/metrics and the dashboard (telemetry/rollups.py).
    "telemetry-roll-up": {"task": "telemetry.roll_up", "schedule": SPARKOPS_ROLLUP_SECONDS},
    # simplejwt's outstanding and blacklisted refresh tokens past their expiry.
    "auth-flush-expired-tokens": {"task": "accounts.flush_expired_tokens", "schedule": crontab(minute=47, hour=3)},
    # Starts buffered fires whose schedule has no active run any more; as often as the reaper.
    "schedules-release-buffered": {"task": "schedules.release_buffered", "schedule": SPARKOPS_REAP_SECONDS},
    # Sends webhook deliveries that are due and that no message woke a worker for (a lost
    # enqueue, a worker killed mid-send, a retry's time come).
    "webhooks-reap": {"task": "webhooks.reap", "schedule": SPARKOPS_REAP_SECONDS},
    # Destroys sandboxes idle past their timeout, of ended tasks, or unknown to the database.
    "taskboard-reap-sandboxes": {"task": "taskboard.reap_sandboxes", "schedule": SPARKOPS_REAP_SECONDS * 2},
}

# ------------------------------------------------------------------------------
# Task board: sandboxes and pull requests (taskboard/)
# ------------------------------------------------------------------------------
# "local" (a directory and subprocesses; the embedded default) or "e2b" (needs E2B_API_KEY).
SPARKOPS_SANDBOX_PROVIDER = env.str("SPARKOPS_SANDBOX_PROVIDER", default="local")
SPARKOPS_SANDBOX_ROOT = env.str("SPARKOPS_SANDBOX_ROOT", default=str(VAR_DIR / "sandboxes"))
# A sandbox unused this long is destroyed by the reaper (and E2B stops its own at this timeout).
SPARKOPS_SANDBOX_IDLE_SECONDS = env.float("SPARKOPS_SANDBOX_IDLE_SECONDS", default=900.0)
# What each sandbox may use: seconds per command, CPU seconds, memory, file size, output kept.
SPARKOPS_SANDBOX_LIMITS = {
    "timeout": env.float("SPARKOPS_SANDBOX_COMMAND_TIMEOUT", default=120.0),
    "cpu_seconds": env.int("SPARKOPS_SANDBOX_CPU_SECONDS", default=120),
    "memory_mb": env.int("SPARKOPS_SANDBOX_MEMORY_MB", default=2048),
    "file_size_mb": env.int("SPARKOPS_SANDBOX_FILE_SIZE_MB", default=200),
    "output_bytes": env.int("SPARKOPS_SANDBOX_OUTPUT_BYTES", default=64_000),
}
# Tasks clone https URLs only; true also lets them clone absolute paths on the server (a local
# bare repository in development and tests). Never in production: the agent would read them.
SPARKOPS_TASK_LOCAL_REPOSITORIES = env.bool("SPARKOPS_TASK_LOCAL_REPOSITORIES", default=False)
SPARKOPS_E2B_API_KEY = env.str("E2B_API_KEY", default="")
SPARKOPS_E2B_DOMAIN = env.str("E2B_DOMAIN", default="")
SPARKOPS_E2B_API_URL = env.str("E2B_API_URL", default="")  # the SDK's own variable; tests point it at a fake
SPARKOPS_E2B_TEMPLATE = env.str("SPARKOPS_E2B_TEMPLATE", default="")
# E2B bills per second of a running sandbox; the default template's 2 vCPU and 512 MiB, in USD.
SPARKOPS_E2B_USD_PER_SECOND = env.float("SPARKOPS_E2B_USD_PER_SECOND", default=0.000028)
# GitHub's REST API; for GitHub Enterprise, e.g. "https://github.example.com/api/v3" (a github
# credential's base URL overrides it).
SPARKOPS_GITHUB_API_URL = env.str("SPARKOPS_GITHUB_API_URL", default="https://api.github.com")

# ------------------------------------------------------------------------------
# Logging
# ------------------------------------------------------------------------------
# JSON lines (production, the default) or readable console lines (LOG_FORMAT=console, the local
# default), through structlog (telemetry/logs.py); every line carries the request's or task's
# context. Celery keeps its hands off the root logger, so workers log the same way.
LOG_FORMAT = env.str("LOG_FORMAT", default="json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "telemetry.logs.json_formatter"},
        "console": {"()": "telemetry.logs.console_formatter"},
    },
    "filters": {"one_traceback": {"()": "telemetry.logs.OneTraceback"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["one_traceback"]},
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
DJANGO_STRUCTLOG_CELERY_ENABLED = True  # task_id in workers; the request_id travels with the task
DJANGO_STRUCTLOG_TRUST_UPSTREAM_REQUEST_ID = False  # telemetry/logs.py checks X-Request-ID first
DJANGO_STRUCTLOG_IP_LOGGING_ENABLED = False  # behind a proxy the address is the proxy's

# ------------------------------------------------------------------------------
# Demo data (manage.py seed_demo)
# ------------------------------------------------------------------------------
SPARKOPS_DEMO_PASSWORD = env.str("SPARKOPS_DEMO_PASSWORD", default="")

# ------------------------------------------------------------------------------
# Outbound HTTP (sparkops/lib/http.py)
# ------------------------------------------------------------------------------
# Networks exempt from the SSRF guard, e.g. "127.0.0.1/32" to reach a local model server in
# development. Empty in production unless you mean it.
SPARKOPS_HTTP_ALLOWED_NETWORKS = env.list("SPARKOPS_HTTP_ALLOWED_NETWORKS", default=[])

# ------------------------------------------------------------------------------
# Webhooks and notifications (webhooks/)
# ------------------------------------------------------------------------------
# The origin links in notices point at, e.g. "https://ops.example.com" (the admin's run page).
SPARKOPS_BASE_URL = env.str("SPARKOPS_BASE_URL", default="http://localhost:8000")
# An endpoint is disabled after this many failed attempts in a row (any deliveries), reason shown.
SPARKOPS_WEBHOOK_DISABLE_AFTER = env.int("SPARKOPS_WEBHOOK_DISABLE_AFTER", default=20)
SPARKOPS_WEBHOOK_TIMEOUT_SECONDS = env.float("SPARKOPS_WEBHOOK_TIMEOUT_SECONDS", default=10.0)
# A delivery being sent is claimed this long (past the timeout); if its worker dies mid-send, the
# reaper sends it again once the claim has run out.
SPARKOPS_WEBHOOK_CLAIM_SECONDS = env.float("SPARKOPS_WEBHOOK_CLAIM_SECONDS", default=60.0)
# Email notifications: EMAIL_URL as django-environ reads it, e.g. "smtp+tls://user:pass@smtp.example.com:587";
# locally the console backend prints each message in the worker's output.
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Spark-Ops <noreply@localhost>")

# ------------------------------------------------------------------------------
# Secret encryption (sparkops/lib/crypto.py)
# ------------------------------------------------------------------------------
# Newest first. Unset locally: derived from DJANGO_SECRET_KEY. Required in production.
SPARKOPS_ENCRYPTION_KEYS = env.list("SPARKOPS_ENCRYPTION_KEYS", default=[])

# ------------------------------------------------------------------------------
# Metrics (GET /metrics, Prometheus text format)
# ------------------------------------------------------------------------------
# A scraper may show this as "Authorization: Bearer <token>"; empty: no token accepted.
SPARKOPS_METRICS_TOKEN = env.str("SPARKOPS_METRICS_TOKEN", default="")
# Or scrape from one of these networks without a token (requests through a proxy always need it).
SPARKOPS_METRICS_ALLOWED_NETWORKS = env.list("SPARKOPS_METRICS_ALLOWED_NETWORKS", default=["127.0.0.1/32", "::1/128"])

# ------------------------------------------------------------------------------
# Live stream (GET /api/v1/sse)
# ------------------------------------------------------------------------------
# A comment line after this long without a message, so proxies keep idle streams open.
SPARKOPS_SSE_HEARTBEAT_SECONDS = env.float("SPARKOPS_SSE_HEARTBEAT_SECONDS", default=15.0)
# A stream ends after this long (and ?timeout= may ask for less); the client reconnects and resumes.
SPARKOPS_SSE_MAX_SECONDS = env.int("SPARKOPS_SSE_MAX_SECONDS", default=3600)
# How often a web process reads new rows without a wake-up: the only trigger on SQLite, a safety
# net behind LISTEN/NOTIFY on PostgreSQL.
SPARKOPS_SSE_POLL_SECONDS = env.float(
    "SPARKOPS_SSE_POLL_SECONDS", default=5.0 if DATABASE_URL.startswith("postgres") else 0.25
)
# A web process with no stream open this long stops reading until one opens.
SPARKOPS_SSE_IDLE_SECONDS = env.float("SPARKOPS_SSE_IDLE_SECONDS", default=60.0)
# An id still missing this long after a higher one appeared is a rollback, not a late commit.
SPARKOPS_SSE_HOLE_SECONDS = env.float("SPARKOPS_SSE_HOLE_SECONDS", default=300.0)
# How long a stream token (POST /api/v1/sse/token) may be used to open a stream.
SPARKOPS_SSE_TOKEN_SECONDS = env.int("SPARKOPS_SSE_TOKEN_SECONDS", default=60)
# Messages waiting for a client that does not read; past this the stream ends (it resumes on reconnect).
SPARKOPS_SSE_QUEUE_LIMIT = env.int("SPARKOPS_SSE_QUEUE_LIMIT", default=10000)

# ------------------------------------------------------------------------------
# Traces, logs and process health (telemetry/tracing.py, telemetry/logs.py, telemetry/liveness.py)
# ------------------------------------------------------------------------------
# Traces go over OTLP/HTTP to each exporter named here; none named: tracing is off (no SDK).
# The standard OTEL_EXPORTER_OTLP_* variables (endpoint, headers, timeout, compression) are read
# by the exporter itself; LANGWATCH_API_KEY is a shortcut to LangWatch's OTLP endpoint.
SPARKOPS_TRACING_EXPORTERS = []
if not env.bool("OTEL_SDK_DISABLED", default=False):
    if env.str("OTEL_EXPORTER_OTLP_ENDPOINT", default="") or env.str("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", default=""):
        SPARKOPS_TRACING_EXPORTERS.append({})
    if _langwatch_key := env.str("LANGWATCH_API_KEY", default=""):
        _langwatch = env.str("LANGWATCH_ENDPOINT", default="https://app.langwatch.ai").rstrip("/")
        SPARKOPS_TRACING_EXPORTERS.append(
            {"endpoint": f"{_langwatch}/api/otel/v1/traces", "headers": {"Authorization": f"Bearer {_langwatch_key}"}}
        )
# Workers and beat write a heartbeat this often; /health/ready reports their age.
SPARKOPS_HEARTBEAT_SECONDS = env.float("SPARKOPS_HEARTBEAT_SECONDS", default=10.0)
# Task events for Flower (`celery -A sparkops flower`); off by default: every task then sends
# several messages more through the broker.
CELERY_WORKER_SEND_TASK_EVENTS = env.bool("SPARKOPS_TASK_EVENTS", default=False)
CELERY_TASK_SEND_SENT_EVENT = CELERY_WORKER_SEND_TASK_EVENTS
