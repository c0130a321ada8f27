"""GET /metrics: who may scrape, and what the numbers say about the rows behind them."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from policies.choices import EntryStatus
from policies.models import SpendEntry
from runs import tasks
from runs.choices import RunStatus, StepStatus
from runs.engine import core
from runs.models import Run, RunStep
from runs.tests.factories import bare_run, make_catalog, make_workflow
from telemetry import cache_metrics

TOKEN = "scrape-token-0123456789"
OUTSIDE = "203.0.113.9"  # TEST-NET-3: in no allowed network


@pytest.fixture
def token(settings):
    settings.SPARKOPS_METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(client: Client | None = None, **extra):
    return (client or Client()).get("/metrics", **extra)


def samples(response) -> dict[tuple[str, frozenset], float]:
    """(sample name, labels) -> value, as Prometheus would read the page."""
    assert response.status_code == 200, response.content
    found = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


def value(found: dict, name: str, **labels) -> float:
    return found[name, frozenset(labels.items())]


# ------------------------------------------------------------------------------
# Who may scrape
# ------------------------------------------------------------------------------
def test_from_outside_the_allowed_networks_it_needs_the_token(db, token):
    response = scrape(REMOTE_ADDR=OUTSIDE)

    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert "SPARKOPS_METRICS_TOKEN" in response.json()["message"]


def test_the_token_is_accepted_from_anywhere(db, token):
    response = scrape(REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize("address", [OUTSIDE, "127.0.0.1"])
def test_a_wrong_token_is_refused_even_from_an_allowed_network(db, token, address):
    assert scrape(REMOTE_ADDR=address, HTTP_AUTHORIZATION="Bearer not-the-token").status_code == 403


def test_with_no_token_set_an_empty_bearer_token_is_no_way_in(db, settings):
    settings.SPARKOPS_METRICS_TOKEN = ""

    assert scrape(REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION="Bearer ").status_code == 403


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
def test_the_local_machine_may_scrape_without_a_token_by_default(db, address):
    assert scrape(REMOTE_ADDR=address).status_code == 200


def test_the_allowed_networks_come_from_the_setting(db, settings):
    settings.SPARKOPS_METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]

    assert scrape(REMOTE_ADDR="10.20.30.40").status_code == 200
    assert scrape(REMOTE_ADDR="127.0.0.1").status_code == 403


@pytest.mark.parametrize("header", ["HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP"])
def test_a_request_through_a_proxy_needs_the_token_even_from_an_allowed_address(db, token, header):
    assert scrape(REMOTE_ADDR="127.0.0.1", **{header: OUTSIDE}).status_code == 403
    assert scrape(REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **{header: OUTSIDE}).status_code == 200


def test_behind_a_trusted_proxy_the_forwarded_client_is_checked_against_the_networks(db, token, settings):
    settings.SPARKOPS_TRUSTED_PROXIES = ["10.9.0.0/16"]
    settings.SPARKOPS_METRICS_ALLOWED_NETWORKS = ["192.0.2.0/24"]
    assert scrape(REMOTE_ADDR="10.9.0.2", HTTP_X_FORWARDED_FOR="192.0.2.5").status_code == 200
    # The client's own claim at the front of the header counts for nothing.
    assert scrape(REMOTE_ADDR="10.9.0.2", HTTP_X_FORWARDED_FOR="192.0.2.5, " + OUTSIDE).status_code == 403
    # A trusted proxy that does not say who asked vouches for no one.
    assert scrape(REMOTE_ADDR="10.9.0.2").status_code == 403
    # Only a trusted peer's header is read.
    assert scrape(REMOTE_ADDR=OUTSIDE, HTTP_X_FORWARDED_FOR="192.0.2.5").status_code == 403


def test_a_malformed_network_setting_is_reported_as_a_configuration_error(db, settings):
    settings.SPARKOPS_METRICS_ALLOWED_NETWORKS = ["localhost"]

    with pytest.raises(ImproperlyConfigured, match="SPARKOPS_METRICS_ALLOWED_NETWORKS"):
        scrape()


def test_it_answers_get_only(db):
    assert Client().post("/metrics").status_code == 405


# ------------------------------------------------------------------------------
# The numbers
# ------------------------------------------------------------------------------
@pytest.fixture
def rows(team):
    """Four runs with their steps in various states, and a ledger of five calls."""
    make_catalog(team.project)
    workflow = make_workflow(team.project)  # steps a and b
    done = [bare_run(workflow, status=RunStatus.SUCCEEDED) for _ in range(2)]
    failed = bare_run(workflow, status=RunStatus.FAILED)
    waiting = bare_run(workflow, status=RunStatus.QUEUED)
    RunStep.objects.filter(run__in=done).update(status=StepStatus.SUCCEEDED)
    RunStep.objects.filter(run=failed, key="a").update(status=StepStatus.FAILED)
    RunStep.objects.filter(run=failed, key="b").update(status=StepStatus.CANCELLED)
    RunStep.objects.filter(run=waiting, key="a").update(status=StepStatus.QUEUED)

    now = timezone.now()
    for cost, tokens in [("0.25", (100, 20)), ("0.50", (200, 40)), (None, (10, 5))]:
        SpendEntry.objects.create(
            project=team.project, provider="echo", model="echo-1", created_at=now, status=EntryStatus.SETTLED,
            cost_usd=cost and Decimal(cost), input_tokens=tokens[0], output_tokens=tokens[1],
        )  # fmt: skip
    for status, held in [(EntryStatus.RESERVED, "0.30"), (EntryStatus.EXPIRED, "0.02")]:
        SpendEntry.objects.create(
            project=team.project, provider="echo", model="echo-1", created_at=now, status=status,
            reserved_usd=Decimal(held),
        )  # fmt: skip


def test_runs_and_steps_are_counted_by_status_with_the_queue_depth(rows):
    found = samples(scrape())

    runs = {status: value(found, "sparkops_runs", status=status) for status in RunStatus.values}
    assert runs == {**dict.fromkeys(RunStatus.values, 0), "succeeded": 2, "failed": 1, "queued": 1}
    steps = {status: value(found, "sparkops_steps", status=status) for status in StepStatus.values}
    expected = {"succeeded": 4, "failed": 1, "cancelled": 1, "queued": 1, "pending": 1}
    assert steps == {**dict.fromkeys(StepStatus.values, 0), **expected}
    assert value(found, "sparkops_queue_depth", queue="runs") == 1
    assert value(found, "sparkops_queue_depth", queue="steps") == 1


def test_spend_and_tokens_come_from_the_ledger(rows):
    found = samples(scrape())

    assert value(found, "sparkops_spend_usd_total") == pytest.approx(0.75)  # settled calls only
    assert value(found, "sparkops_spend_held_usd", status="reserved") == pytest.approx(0.30)
    assert value(found, "sparkops_spend_held_usd", status="expired") == pytest.approx(0.02)
    assert value(found, "sparkops_tokens_total", direction="input") == 310
    assert value(found, "sparkops_tokens_total", direction="output") == 65
    assert value(found, "sparkops_provider_calls_total") == 5
    assert value(found, "sparkops_unpriced_calls_total") == 1


def test_labels_never_name_a_project_or_a_path(rows):
    Client().get(f"/api/v1/runs/{Run.objects.first().pk}")
    Client().get("/no/such/page")

    found = samples(scrape())

    label_names = {name for _, labels in found for name, _ in labels}
    assert label_names <= {"status", "queue", "direction", "action", "method", "route", "le"}
    routes = {dict(labels).get("route") for _, labels in found} - {None}
    assert routes == {"run-detail", "other"}


def test_a_scrape_costs_three_queries_however_many_rows(rows, django_assert_max_num_queries):
    with django_assert_max_num_queries(3):
        samples(scrape())


def test_the_filesystem_broker_has_no_queue_length(rows):
    if settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.skip("the broker is Redis here")

    assert not any(name.startswith("sparkops_broker") for name, _ in samples(scrape()))


def test_the_redis_broker_queue_length_counts_messages_no_worker_took(rows):
    if not settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.skip("needs REDIS_URL")
    from sparkops.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(app.conf.task_default_queue)  # this test's own Redis database
        before = value(samples(scrape()), "sparkops_broker_queue_length", queue="celery")
        tasks.run_advance.apply_async(args=["00000000-0000-0000-0000-000000000000"])
        tasks.run_advance.apply_async(args=["00000000-0000-0000-0000-000000000000"], priority=9)
        after = value(samples(scrape()), "sparkops_broker_queue_length", queue="celery")
        conn.default_channel.queue_purge(app.conf.task_default_queue)

    assert (before, after) == (0, 2)


# ------------------------------------------------------------------------------
# Request latencies
# ------------------------------------------------------------------------------
def test_the_latency_histogram_counts_requests_by_method_and_route_name(db):
    client = Client()
    client.get("/health")
    client.get("/health/")
    client.head("/health")

    found = samples(scrape(client))

    assert value(found, "sparkops_http_request_duration_seconds_count", method="GET", route="health") == 2
    assert value(found, "sparkops_http_request_duration_seconds_bucket", method="GET", route="health", le="+Inf") == 2
    assert value(found, "sparkops_http_request_duration_seconds_count", method="HEAD", route="health") == 1
    assert 0 < value(found, "sparkops_http_request_duration_seconds_sum", method="GET", route="health") < 10
    # Buckets are cumulative: each holds at least what the one below it does.
    buckets = [
        value(found, "sparkops_http_request_duration_seconds_bucket", method="GET", route="health", le=str(bound))
        for bound in (*cache_metrics.LATENCY_BUCKETS, "+Inf")
    ]
    assert buckets == sorted(buckets)
    # The scrape itself is counted once it has answered, in the next scrape.
    found = samples(scrape(client))
    assert value(found, "sparkops_http_request_duration_seconds_count", method="GET", route="prometheus-metrics") == 1


def test_admin_pages_share_one_route_label(db):
    Client().get("/admin/login/")
    Client().get("/admin/runs/run/")

    found = samples(scrape())

    assert value(found, "sparkops_http_request_duration_seconds_count", method="GET", route="admin") == 2


# ------------------------------------------------------------------------------
# The reaper
# ------------------------------------------------------------------------------
def test_reaper_counters_move_when_the_reap_task_acts(engine_inline, team):
    make_catalog(team.project)
    run = bare_run(make_workflow(team.project))
    Run.objects.filter(pk=run.pk).update(updated_at=timezone.now() - core.STALE_RUN - timedelta(seconds=1))
    SpendEntry.objects.create(
        project=team.project, provider="echo", model="echo-1", status=EntryStatus.RESERVED,
        reserved_usd=Decimal("0.10"), created_at=timezone.now() - timedelta(hours=1),
    )  # fmt: skip

    counts = tasks.reap()
    tasks.reap()  # nothing left to do: the counters stay

    found = samples(scrape())
    assert counts == {"steps": 0, "runs": 1, "reservations": 1}  # buffered fires: schedules/tests/test_services.py
    reaper = {action: value(found, "sparkops_reaper_actions_total", action=action) for action in counts}
    assert reaper == counts
    assert Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED
