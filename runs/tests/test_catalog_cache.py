"""The engine's per-process catalog (runs/engine/catalog.py): a step of a project whose agents,
tools, credentials, policies and prices did not change reads none of them again, and any change,
however it is written (queryset updates and raw SQL included), is seen by the next step."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents.choices import AgentStatus
from agents.models import Agent, ModelPrice, ProviderCredential, Tool
from policies import kinds
from policies.choices import PolicyKind
from policies.models import Policy
from policies.tests.factories import PolicyFactory
from runs.choices import RunStatus
from runs.engine import catalog as engine_catalog
from runs.models import CatalogGeneration, Run
from sparkops.testing import make_team

from .factories import agent_step, make_catalog, make_workflow, start, step_of

CATALOG_TABLES = ("agents_agent", "agents_tool", "policies_policy", "agents_modelprice")


@pytest.fixture
def catalog(engine, team):
    return make_catalog(team.project)


def one_step(project, slug: str = "one"):
    return make_workflow(project, agent_step("a"), slug=slug)


def reload(run: Run) -> Run:
    return Run.objects.get(pk=run.pk)


def generation(project) -> int | None:
    return CatalogGeneration.objects.filter(project=project).values_list("number", flat=True).first()


def catalog_reads(queries) -> list[str]:
    """Reads of what a step's calls use: agents, tools, prices and the call-stage policies (the
    admission and slot stages' policies are read per run, with their locks, not per step)."""
    call_kinds = "IN (" + ", ".join(f"'{kind}'" for kind in kinds.at(kinds.CALL)) + ")"
    return [
        q["sql"]
        for q in queries
        if q["sql"].startswith("SELECT")
        and any(t in q["sql"] for t in CATALOG_TABLES)
        and ("policies_policy" not in q["sql"].split(" WHERE ")[0] or call_kinds in q["sql"])
    ]


def test_a_second_run_reads_nothing_of_the_catalog_again(catalog):
    workflow = one_step(catalog.project)
    start(workflow)

    with CaptureQueriesContext(connection) as queries:
        run = reload(start(workflow))

    assert run.status == RunStatus.SUCCEEDED
    assert catalog_reads(queries.captured_queries) == []


def test_an_agent_changed_by_a_queryset_update_is_seen_by_the_next_run(catalog):
    workflow = one_step(catalog.project)
    start(workflow)

    Agent.objects.filter(pk=catalog.writer.pk).update(model="echo-2")  # no save(), no signal
    run = reload(start(workflow))
    assert step_of(run, "a").model == "echo-2"

    Agent.objects.filter(pk=catalog.writer.pk).update(status=AgentStatus.DISABLED)
    run = reload(start(workflow))
    assert run.status == RunStatus.FAILED
    assert step_of(run, "a").error["type"] == "AgentUnavailable"


def test_an_agent_handed_out_is_a_copy_a_step_may_change(catalog):
    reload(start(one_step(catalog.project)))
    cached = engine_catalog.of(catalog.project.pk, generation(catalog.project))

    cached.agent(catalog.project.pk, "writer").model = "changed"  # as a replay's model override does

    assert cached.agent(catalog.project.pk, "writer").model == "echo-1"


def test_a_new_price_is_seen_by_the_next_run_and_a_later_one_only_from_its_start(catalog):
    workflow = one_step(catalog.project)
    before = reload(start(workflow)).cost_usd
    assert before > 0

    ModelPrice.objects.bulk_create(
        [
            ModelPrice(
                provider="echo",
                model="echo-1",
                effective_from=timezone.now() - timedelta(seconds=1),
                input_usd_per_mtok=Decimal("1000"),
                output_usd_per_mtok=Decimal("1000"),
            ),
            ModelPrice(
                provider="echo",
                model="echo-1",
                effective_from=timezone.now() + timedelta(days=1),
                input_usd_per_mtok=Decimal("9999"),
                output_usd_per_mtok=Decimal("9999"),
            ),
        ]
    )
    run = reload(start(workflow))

    assert run.cost_usd == Decimal(1000) * (run.input_tokens + run.output_tokens) / 1_000_000


def test_a_policy_added_or_enabled_in_any_way_blocks_the_next_run(catalog):
    workflow = one_step(catalog.project)
    assert reload(start(workflow)).status == RunStatus.SUCCEEDED
    only_openai = {"models": ["openai/*"]}

    listed = PolicyFactory(project=catalog.project, kind=PolicyKind.MODEL_ALLOWLIST, config=only_openai)
    assert reload(start(workflow)).status == RunStatus.FAILED

    Policy.objects.filter(pk=listed.pk).update(enabled=False)
    assert reload(start(workflow)).status == RunStatus.SUCCEEDED

    # A global policy (no project) applies to every project.
    PolicyFactory(project=None, kind=PolicyKind.MODEL_ALLOWLIST, config=only_openai)
    assert reload(start(workflow)).status == RunStatus.FAILED


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda c: Agent.objects.filter(pk=c.writer.pk).update(system_prompt="new"), id="agent-update"),
        pytest.param(lambda c: Tool.objects.filter(pk=c.calc.pk).update(enabled=False), id="tool-update"),
        pytest.param(lambda c: c.helper.tools.remove(c.calc), id="agent-tools-remove"),
        pytest.param(lambda c: c.writer.tools.add(c.calc), id="agent-tools-add"),
        pytest.param(
            lambda c: ProviderCredential.objects.create(project=c.project, name="k", provider="openai"),
            id="credential-create",
        ),
        pytest.param(lambda c: Tool.objects.filter(pk=c.calc.pk).delete(), id="tool-delete"),
        pytest.param(
            lambda c: PolicyFactory(project=c.project, kind=PolicyKind.BUDGET, enabled=False), id="policy-create"
        ),
        pytest.param(
            lambda c: ModelPrice.objects.filter(provider="echo").update(input_usd_per_mtok=Decimal(3)), id="price"
        ),
        pytest.param(
            lambda c: _raw("UPDATE agents_agent SET model = 'raw' WHERE id = %s", [c.writer.pk]),
            id="raw-sql",
        ),
    ],
)
def test_every_kind_of_catalog_write_moves_the_projects_generation(catalog, change):
    before = generation(catalog.project)

    change(catalog)

    assert generation(catalog.project) > (before or 0)


def test_a_write_in_another_project_leaves_this_ones_generation_alone(catalog):
    other = make_catalog(make_team().project)
    before = generation(catalog.project)

    Agent.objects.filter(pk=other.writer.pk).update(model="other")

    assert generation(catalog.project) == before


def _raw(sql: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, [Agent._meta.pk.get_db_prep_value(p, connection) for p in params])
