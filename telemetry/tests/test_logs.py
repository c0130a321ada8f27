"""Structured log lines: the formatter production uses (JSON), fed by the real request and task
handling. Lines are captured with a handler built exactly as settings.LOGGING builds its own."""

import io
import json
import logging
import time
import uuid

import pytest
from django.conf import settings
from django.test import Client

from agents import services as agent_services
from agents.models import Agent
from runs.choices import RunStatus
from runs.models import Run
from runs.tests.e2e_support import Worker
from sparkops.celery import app as celery_app
from sparkops.testing import make_team
from telemetry import logs
from workflows import services as workflow_services

from .test_tracing import e2e


@pytest.fixture
def json_lines():
    """Every line logged during the test, parsed; as the console handler of settings.LOGGING
    formats and filters them in production."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.json_formatter())
    handler.addFilter(logs.OneTraceback())
    root = logging.getLogger()
    root.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)


def test_production_logs_json_and_local_logs_readable_lines():
    assert settings.LOGGING["handlers"]["console"]["formatter"] == "json"  # base, production, tests
    from sparkops.settings import local

    assert local.LOGGING["handlers"]["console"]["formatter"] == "console"
    assert local.LOG_FORMAT == "console"


@pytest.mark.django_db
def test_a_request_logs_its_request_id_user_and_project_and_echoes_the_id(team, json_lines):
    response = team.client("developer").get(f"/api/v1/projects/{team.project.pk}", HTTP_X_REQUEST_ID="trace-me-123")
    assert response.status_code == 200
    assert response["X-Request-ID"] == "trace-me-123"

    lines = [line for line in json_lines() if line.get("request_id") == "trace-me-123"]
    events = [line["event"] for line in lines]
    assert events[0] == "request_started"
    assert events[-1] == "request_finished"
    finished = lines[-1]
    assert finished["code"] == 200
    assert finished["request"] == f"GET /api/v1/projects/{team.project.pk}"
    assert finished["user_id"] == team.members["developer"].pk
    assert finished["project"] == str(team.project.pk)
    assert finished["level"] == "info"
    assert finished["timestamp"].endswith("Z")


@pytest.mark.django_db
@pytest.mark.parametrize("header", [None, "", "has spaces and\nnewlines", "x" * 129])
def test_a_request_without_a_usable_request_id_gets_one_made(team, json_lines, header):
    extra = {} if header is None else {"HTTP_X_REQUEST_ID": header}
    response = team.client("viewer").get("/api/v1/projects", **extra)
    made = response["X-Request-ID"]
    assert str(uuid.UUID(made)) == made
    assert json_lines()[-1]["request_id"] == made


@pytest.mark.django_db
@pytest.mark.urls("telemetry.tests.urls_failing")
def test_a_server_error_logs_one_traceback_not_two(json_lines):
    response = Client(raise_request_exception=False).get("/failing", HTTP_X_REQUEST_ID="boom-1")
    assert response.status_code == 500
    assert response["X-Request-ID"] == "boom-1"

    lines = [line for line in json_lines() if line.get("request_id") == "boom-1"]
    with_traceback = [line for line in lines if "Traceback" in line.get("exception", "")]
    assert [line["event"] for line in with_traceback] == ["request_failed"]
    assert "RuntimeError: the test's own failure" in with_traceback[0]["exception"]
    # Django's own line stays, without its copy of the traceback.
    assert any(line["logger"] == "django.request" and "exception" not in line for line in lines)


# ------------------------------------------------------------------------------
# A real worker: its lines are JSON with the task's id, the run and the step
# ------------------------------------------------------------------------------
@e2e
@pytest.mark.django_db(transaction=True)
def test_worker_lines_carry_the_task_id_the_run_and_the_step(tmp_path):
    team = make_team()
    agent_services.agent_save(agent=Agent(project=team.project, slug="echo", name="E", provider="echo", model="e"))
    workflow = workflow_services.workflow_create(
        project=team.project,
        user=None,
        name="one",
        slug="one",
        definition={"steps": [{"key": "only", "kind": "agent", "agent": "echo", "prompt": "hi"}]},
        publish=True,
    )
    celery_app.control.purge()
    worker = Worker(tmp_path / "worker.log").start()
    try:
        response = team.client("developer").post(
            f"/api/v1/workflows/{workflow.pk}/run", {"inputs": {}}, format="json", HTTP_X_REQUEST_ID="from-the-api"
        )
        run_id = response.json()["id"]
        deadline = time.monotonic() + 30
        while Run.objects.get(pk=run_id).status != RunStatus.SUCCEEDED and time.monotonic() < deadline:
            time.sleep(0.1)
        assert Run.objects.get(pk=run_id).status == RunStatus.SUCCEEDED, worker.log_path.read_text()[-3000:]
        # A task that fails: a run id that is no UUID.
        celery_app.send_task("runs.run_advance", ["not-a-uuid"])
        deadline = time.monotonic() + 30
        while '"task_failed"' not in worker.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # the task's last lines
    finally:
        worker.stop()

    lines = [json.loads(line) for line in worker.log_path.read_text().splitlines() if line.startswith("{")]
    done = [line for line in lines if line["event"] == "task_succeeded" and line.get("step") == "only"]
    assert done, worker.log_path.read_text()[-3000:]
    assert done[0]["run_id"] == run_id
    assert uuid.UUID(done[0]["task_id"])
    # The request that queued the run's first task: its id travelled with the message.
    # One traceback for the failed task: in django-structlog's task_failed, not in Celery's line.
    failed = [line for line in lines if line.get("run_id") == "not-a-uuid"]
    assert [line["event"] for line in failed if "Traceback" in line.get("exception", "")] == ["task_failed"]
    assert any(line["logger"] == "celery.app.trace" and "exception" not in line for line in failed)

    queued_by_it = [line for line in lines if line.get("request_id") == "from-the-api"]
    assert {line["event"] for line in queued_by_it} >= {"task_started", "task_succeeded"}
    assert {line.get("run_id") for line in queued_by_it} >= {run_id}
