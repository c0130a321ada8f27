from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django_celery_beat.models import PeriodicTask

from accounts.models import User
from agents.models import Agent, Tool
from policies.choices import EntryStatus, PolicyAction, PolicyKind
from policies.models import Policy, PolicyDecision, SpendEntry
from projects.models import Membership, Project
from runs import services as run_services
from runs.models import Run
from runs.tests.factories import echo_price
from schedules import services as schedule_services
from schedules.models import Schedule
from sparkops.roles import Role
from workflows.models import Workflow


@pytest.mark.django_db
def test_seed_demo_is_idempotent(settings):
    settings.DEBUG = True
    call_command("seed_demo")

    def counts():
        models = [User, Project, Membership, Agent, Tool, Workflow, Run, Schedule, PeriodicTask, Policy]
        return [m.objects.count() for m in models]

    first = counts()
    call_command("seed_demo")
    assert counts() == first
    assert first == [2, 2, 4, 6, 10, 4, 8, 1, 1, 3]
    researcher = Agent.objects.get(project__slug="demo-research", slug="researcher")
    assert researcher.provider == "echo"
    assert sorted(researcher.tools.values_list("slug", flat=True)) == ["calculator", "extract_json"]
    owner = User.objects.get(email="demo@sparkops.local")
    assert owner.is_superuser
    assert set(Membership.objects.filter(user=owner).values_list("role", flat=True)) == {Role.OWNER}
    assert owner.check_password("spark-demo-pass")


@pytest.mark.django_db
def test_seed_demo_adds_a_budget_a_run_ceiling_and_an_approval_rule_for_risky_tools(settings):
    settings.DEBUG = True
    call_command("seed_demo")
    call_command("seed_demo")

    policies = {p.kind: p for p in Policy.objects.filter(project__slug="demo-research")}
    assert Policy.objects.count() == len(policies) == 3
    assert policies[PolicyKind.BUDGET].config == {"amount_usd": 5, "window": "day", "timezone": "UTC"}
    assert policies[PolicyKind.RUN_CEILING].config == {"max_usd": 0.5, "max_tokens": 200000}
    approval = policies[PolicyKind.APPROVAL]
    assert (approval.action, approval.config["role"]) == (PolicyAction.REQUIRE_APPROVAL, "admin")
    assert {p.created_by.email for p in policies.values()} == {"demo@sparkops.local"}
    # The rule covers the demo's riskiest tool, and no tool the demo workflows use.
    risky = Tool.objects.get(project__slug="demo-research", slug="post_update")
    assert (risky.risk_class, approval.config["risk_class"]) == ("write", "write")
    assert set(Tool.objects.exclude(slug="post_update").values_list("risk_class", flat=True)) == {"read"}


@pytest.mark.django_db
def test_seed_demo_refuses_to_run_with_debug_off_unless_forced(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError):
        call_command("seed_demo")
    assert not User.objects.exists()
    call_command("seed_demo", "--force", "--password", "another-demo-pass")
    assert User.objects.get(email="dev@sparkops.local").check_password("another-demo-pass")


@pytest.mark.django_db
def test_seed_demo_sets_the_given_password_on_existing_demo_users(settings):
    settings.DEBUG = True
    call_command("seed_demo")
    out = StringIO()
    call_command("seed_demo", "--password", "a-new-demo-pass", stdout=out)
    for email in ("demo@sparkops.local", "dev@sparkops.local"):
        assert User.objects.get(email=email).check_password("a-new-demo-pass")
    assert "password set for demo@sparkops.local" in out.getvalue()
    # Without --password a second run leaves the password alone.
    call_command("seed_demo")
    assert User.objects.get(email="demo@sparkops.local").check_password("a-new-demo-pass")


@pytest.mark.django_db
def test_createsuperuser_takes_email_and_password_from_the_environment(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "Root@Example.com")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a-long-root-password")
    call_command("createsuperuser", "--noinput")
    user = User.objects.get()
    assert user.email == "root@example.com"
    assert user.is_superuser
    assert user.is_staff
    assert user.check_password("a-long-root-password")


@pytest.mark.django_db
def test_the_admin_login_page_and_index_work_for_a_superuser(client):
    user = User.objects.create_superuser(email="ops@example.com", password="pw-for-ops-staff")
    assert client.get("/admin/login/").status_code == 200
    client.force_login(user)
    response = client.get("/admin/")
    assert response.status_code == 200
    assert b"Projects" in response.content


def test_seed_demo_runs_complete_on_the_echo_provider(engine_inline, settings):
    settings.DEBUG = True
    echo_price()  # migration-seeded; a transactional test's flush removed it
    call_command("seed_demo")
    brief = Run.objects.filter(workflow__slug="brief")
    assert brief.count() == 4
    assert set(brief.values_list("status", flat=True)) == {"succeeded"}
    # The review workflow stops at its human sign-off when the report was deep enough.
    deep = Run.objects.get(workflow__slug="review", workflow__project__slug="demo-research", inputs__depth=5)
    assert deep.status == "waiting_approval"
    shallow = Run.objects.get(workflow__slug="review", workflow__project__slug="demo-research", inputs__depth=1)
    assert shallow.status == "succeeded"
    assert shallow.steps.get(key="draft").status == "skipped"


def test_the_review_demo_runs_on_inputs_its_schema_accepts(engine_inline, settings):
    settings.DEBUG = True
    echo_price()
    call_command("seed_demo")
    workflow = Workflow.objects.get(slug="review", project__slug="demo-research")

    owner = User.objects.get(email="demo@sparkops.local")
    run, _ = run_services.run_start(workflow=workflow, inputs={"topic": "wind"}, user=owner)

    run.refresh_from_db()
    # Without depth the demo takes the default of 3 (30 on the calculator): the long report.
    assert run.status == "waiting_approval", run.error
    assert run.steps.get(key="numbers").output == 30


def test_the_demo_schedule_runs_under_the_demo_policies(engine_inline, settings):
    settings.DEBUG = True
    echo_price()
    call_command("seed_demo")
    schedule = Schedule.objects.get(project__slug="demo-research")

    fire = schedule_services.trigger(schedule=schedule)

    run = Run.objects.get(pk=fire.run_id)
    assert run.status == "succeeded"
    # Each call reserved its estimate against the budget and the ceiling, then settled.
    entries = SpendEntry.objects.filter(run=run)
    assert entries.count() == 2
    assert set(entries.values_list("status", flat=True)) == {EntryStatus.SETTLED}
    assert all(entry.reserved_usd < Decimal("0.01") for entry in entries)
    assert not PolicyDecision.objects.filter(run=run).exists()
