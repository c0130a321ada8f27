"""Traces, end to end, against a real local OTLP/HTTP receiver (otlp_receiver.py): our processes
(a Python process set up like any other, uvicorn, Celery workers) export to it over HTTP and the
tests read what it decoded. Tracing is set up per process, so every test here runs processes of
its own; the ones that need the test database's rows need PostgreSQL and Redis."""

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
from django.conf import settings
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from agents import services as agent_services
from agents.models import Agent, ProviderCredential, Tool
from policies.choices import PolicyKind
from policies.tests.factories import PolicyFactory
from runs.choices import RunStatus
from runs.engine.spans import run_span_context
from runs.models import Run, RunStep
from runs.tests.e2e_support import ROOT, FakeOpenAI, Worker, free_port, process_env, stop_workers, worker_logs
from sparkops.celery import app as celery_app
from sparkops.testing import make_team
from workflows import services as workflow_services

from .otlp_receiver import OtlpReceiver

e2e = pytest.mark.skipif(
    not (settings.DATABASE_URL.startswith("postgres") and settings.REDIS_URL),
    reason="real processes on the test database need PostgreSQL and Redis (set DATABASE_URL and REDIS_URL)",
)
# Spans leave each process every 100 ms instead of every 5 s.
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100"}


@pytest.fixture
def receiver():
    server = OtlpReceiver()
    yield server
    server.stop()


def test_off_by_default_the_engine_spans_are_the_apis_no_ops():
    # This test process names no exporter: no SDK is set up, so nothing can be recorded.
    assert settings.SPARKOPS_TRACING_EXPORTERS == []
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    with trace.get_tracer("probe").start_as_current_span("nothing") as span:
        assert not span.is_recording()


PROBE = """
import django
django.setup()
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from telemetry import tracing
with trace.get_tracer("probe").start_as_current_span("probe span"):
    pass
tracing.flush()
"""


def test_langwatch_api_key_points_the_exporter_at_langwatch_with_its_bearer_header(receiver):
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL") and not key.startswith("OTEL_")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="sparkops.settings.test",
        LANGWATCH_API_KEY="sk-lw-test-key",
        LANGWATCH_ENDPOINT=receiver.origin,
        OTEL_SERVICE_NAME="sparkops-probe",
    )
    subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, check=True, timeout=60)  # noqa: S603

    spans = receiver.wait_for(lambda spans: any(s["name"] == "probe span" for s in spans))
    assert receiver.requests[0]["path"] == "/api/otel/v1/traces"
    assert receiver.requests[0]["headers"]["authorization"] == "Bearer sk-lw-test-key"
    assert spans[0]["resource"]["service.name"] == "sparkops-probe"


# ------------------------------------------------------------------------------
# A request, through a real uvicorn process
# ------------------------------------------------------------------------------
@pytest.fixture
def traced_web(transactional_db, receiver):
    port = free_port()
    env = {**process_env(), **FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.origin}
    command = [sys.executable, "-m", "uvicorn", "sparkops.asgi:application", "--port", str(port), "--lifespan", "off"]
    process = subprocess.Popen(  # noqa: S603 - our own server, fixed arguments
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        _wait_for_http(f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_for_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()  # noqa: S310 - our own local server
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("uvicorn did not start")


@e2e
def test_a_request_is_traced_with_its_database_calls_as_children(traced_web, receiver):
    body = json.dumps({"email": "nobody@example.com", "password": "wrong-password"}).encode()
    request = urllib.request.Request(  # noqa: S310 - our own local server
        f"{traced_web}/api/v1/auth/login", data=body, headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310
    assert refused.value.code in (400, 401)

    def login(span):
        return span["attributes"].get("http.target") == "/api/v1/auth/login"

    spans = receiver.wait_for(lambda spans: any(login(s) for s in spans))
    server = next(s for s in spans if login(s))
    assert server["name"].startswith("POST api/v1/auth/login")
    assert server["kind"] == trace.SpanKind.SERVER.value + 1  # the protobuf's enum counts from UNSPECIFIED
    assert server["attributes"].get("http.response.status_code", server["attributes"].get("http.status_code")) in (
        400,
        401,
    )
    queries = [s for s in spans if s["trace_id"] == server["trace_id"] and s["attributes"].get("db.system")]
    assert queries, "the login's queries are spans of its trace"
    assert {s["attributes"]["db.system"] for s in queries} == {"postgresql"}
    # Probes are not traced.
    assert not any("/health" in str(s["attributes"].get("http.target", "")) for s in spans)


# ------------------------------------------------------------------------------
# A run, through two real worker processes
# ------------------------------------------------------------------------------
@pytest.fixture
def traced_workers(transactional_db, receiver, tmp_path):
    celery_app.control.purge()
    workers = []
    try:
        for n in range(2):
            env = {
                **FAST_EXPORT,
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.origin,
                "OTEL_RESOURCE_ATTRIBUTES": f"sparkops.test.worker=w{n}",
            }
            workers.append(Worker(tmp_path / f"worker-{n}.log", env=env).start())
        yield workers
    finally:
        stop_workers(workers)


@pytest.fixture
def fake():
    """A local OpenAI-compatible server (runs' end-to-end support)."""
    server = FakeOpenAI()
    yield server
    server.stop()


def _catalog(fake):
    team = make_team()
    calc = agent_services.tool_save(
        tool=Tool(project=team.project, slug="calc", name="Calc", kind="builtin", config={"function": "arithmetic"})
    )
    credential = ProviderCredential(project=team.project, name="local", provider="openai", base_url=fake.base_url)
    agent_services.credential_save(credential=credential, secret="sk-local")
    smart = Agent(
        project=team.project, slug="smart", name="Smart", provider="openai", model="gpt-4o-mini", credential=credential
    )
    agent_services.agent_save(agent=smart, tool_list=[calc])
    return team


@e2e
@pytest.mark.django_db(transaction=True)
def test_spans_of_one_run_arrive_under_one_trace_from_two_workers(traced_workers, receiver, fake):
    team = _catalog(fake)
    # A policy that warns about every call to this model: its decision is on each call's span.
    warning = PolicyFactory(
        project=team.project, kind=PolicyKind.MODEL_ALLOWLIST, config={"models": ["anthropic/*"]}, action="warn"
    )
    # Six slow steps side by side: each worker (two processes each) takes some of them.
    steps = [{"key": f"s{n}", "kind": "agent", "agent": "smart", "prompt": f"part {n} SLOW=0.8"} for n in range(6)]
    steps.append({"key": "sum", "kind": "agent", "agent": "smart", "prompt": "sum CALL=calc", "depends_on": ["s0"]})
    workflow = workflow_services.workflow_create(
        project=team.project, user=None, name="fan", slug="fan", definition={"steps": steps}, publish=True
    )
    response = team.client("developer").post(f"/api/v1/workflows/{workflow.pk}/run", {"inputs": {}}, format="json")
    assert response.status_code == 201, response.json()
    run_id = uuid.UUID(response.json()["id"])
    trace_id = f"{run_id.int:032x}"
    run_span_id = f"{run_span_context(run_id).span_id:016x}"

    def complete(spans):
        mine = [s for s in spans if s["trace_id"] == trace_id]
        return any(s["span_id"] == run_span_id for s in mine) and sum(s["name"].startswith("step ") for s in mine) == 7

    try:
        spans = receiver.wait_for(complete, timeout=60)
    except AssertionError:
        raise AssertionError(worker_logs(traced_workers)) from None
    assert Run.objects.get(pk=run_id).status == RunStatus.SUCCEEDED

    mine = [s for s in spans if s["trace_id"] == trace_id]
    root = next(s for s in mine if s["span_id"] == run_span_id)
    assert root["parent_span_id"] == ""
    assert root["name"] == "run fan"
    assert root["attributes"]["sparkops.run.status"] == "succeeded"
    assert root["attributes"]["gen_ai.usage.input_tokens"] == 100 * 8  # seven steps, one with two calls

    step_spans = {s["attributes"]["sparkops.step.key"]: s for s in mine if s["name"].startswith("step ")}
    assert set(step_spans) == {"s0", "s1", "s2", "s3", "s4", "s5", "sum"}
    step_ids = dict(RunStep.objects.filter(run_id=run_id).values_list("key", "pk"))
    for key, span in step_spans.items():
        assert span["parent_span_id"] == run_span_id
        assert span["attributes"]["sparkops.step.id"] == step_ids[key]
        assert span["attributes"]["sparkops.run.id"] == str(run_id)
        assert span["attributes"]["sparkops.project.id"] == str(team.project.pk)
        assert span["attributes"]["sparkops.step.status"] == "succeeded", key
        assert span["links"], "linked to the Celery task span that carried it"
    # From both workers, yet one trace.
    assert {s["resource"]["sparkops.test.worker"] for s in step_spans.values()} == {"w0", "w1"}

    calls = [s for s in mine if s["attributes"].get("gen_ai.operation.name") == "chat"]
    assert len(calls) == 8
    by_id = {s["span_id"]: s for s in mine}
    for call in calls:
        assert call["name"] == "chat gpt-4o-mini"
        assert by_id[call["parent_span_id"]]["name"].startswith("step ")
        assert call["attributes"]["gen_ai.system"] == "openai"
        assert call["attributes"]["gen_ai.request.model"] == "gpt-4o-mini"
        assert call["attributes"]["gen_ai.usage.input_tokens"] == 100
        assert call["attributes"]["gen_ai.usage.output_tokens"] == 20
        assert "sparkops.cost_usd" in call["attributes"]
        assert call["attributes"]["sparkops.policy.outcome"] == "allowed"
        assert call["attributes"]["sparkops.policy.decisions"] == [f"{warning.pk}:warned"]
    tool = next(s for s in mine if s["attributes"].get("gen_ai.operation.name") == "execute_tool")
    assert tool["name"] == "execute_tool calc"
    assert tool["attributes"]["gen_ai.tool.name"] == "calc"
    assert by_id[tool["parent_span_id"]]["attributes"]["sparkops.step.key"] == "sum"
