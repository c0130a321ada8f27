"""Structured logs: every line, ours and the libraries' (stdlib logging), goes through structlog's
ProcessorFormatter, as JSON in production and readable colour-less console lines locally
(``LOG_FORMAT``). The context bound to the request or task (request_id, user_id, project, task_id,
run_id, step) is on every line written while it runs: django-structlog binds the request's and the
task's, the API's scoping binds the project, the engine binds the run and step.

Referenced from settings.LOGGING by dotted path, so nothing here may import models.
"""

import logging
import re
import uuid

import structlog

#: What every line gets, structlog's own and the stdlib's alike.
SHARED = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]

#: Loggers whose error records repeat a traceback that django-structlog also logs (its
#: request_failed and task_failed lines): they keep their line, not their traceback.
TRACEBACK_ELSEWHERE = ("django.request", "celery.app.trace")

#: An X-Request-ID we take from the client as is; anything else is replaced by one of ours.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,100}")


def configure_structlog() -> None:
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *SHARED,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def json_formatter() -> logging.Formatter:
    """One JSON object per line; a traceback is the ``exception`` field of its line."""
    return _formatter(structlog.processors.format_exc_info, structlog.processors.JSONRenderer(default=str))


def console_formatter() -> logging.Formatter:
    return _formatter(structlog.dev.ConsoleRenderer(colors=False))


def _formatter(*renderers) -> logging.Formatter:
    configure_structlog()
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*SHARED, structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderers],
    )


class OneTraceback(logging.Filter):
    """One traceback per error: strip it from the stdlib's copy (see TRACEBACK_ELSEWHERE)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.name in TRACEBACK_ELSEWHERE:
            record.exc_info, record.exc_text = None, None
        return True


def request_id_from(header: str | None) -> str:
    return header if header and REQUEST_ID.fullmatch(header) else str(uuid.uuid4())


# ------------------------------------------------------------------------------
# The request id: taken from X-Request-ID (or made), bound to the request's lines, echoed back
# ------------------------------------------------------------------------------
def bind_request_id(sender, request, logger, log_kwargs, **kwargs) -> None:
    """django-structlog's request_started: our request id instead of its fresh one, stored back on
    the request so the audit trail records the same id as the logs and the response."""
    request_id = request_id_from(request.headers.get("X-Request-ID"))
    request.META["HTTP_X_REQUEST_ID"] = request_id
    structlog.contextvars.bind_contextvars(request_id=request_id)


def echo_request_id(sender, request, response, logger, **kwargs) -> None:
    """django-structlog's request_finished (and failure): the response tells the id."""
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if request_id:
        response["X-Request-ID"] = request_id


def connect() -> None:
    from django_structlog import signals

    signals.bind_extra_request_metadata.connect(bind_request_id, dispatch_uid="telemetry.logs.bind")
    signals.bind_extra_request_finished_metadata.connect(echo_request_id, dispatch_uid="telemetry.logs.echo")
    signals.update_failure_response.connect(echo_request_id, dispatch_uid="telemetry.logs.echo_failure")
