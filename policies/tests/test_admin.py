"""The policies admin: policies edited with their config checked on the form, decisions and the
spend ledger read-only, and a budget overview per project computed from the ledger."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from accounts.tests.factories import UserFactory
from policies.choices import EntryStatus, Outcome, PolicyAction, PolicyKind, Stage
from policies.models import Policy
from projects.tests.factories import MembershipFactory, ProjectFactory

from .factories import PolicyDecisionFactory, PolicyFactory, SpendEntryFactory

POLICIES = "/admin/policies/policy/"
DECISIONS = "/admin/policies/policydecision/"
LEDGER = "/admin/policies/spendentry/"
BUDGETS = "/admin/policies/policy/budgets/"
BUDGET = {"amount_usd": 5, "window": "day", "timezone": "UTC"}


@pytest.fixture
def superuser(db):
    return UserFactory(is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client(superuser) -> Client:
    client = Client()
    client.force_login(superuser)
    return client


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def form_data(project=None, **fields) -> dict:
    data = {
        "project": str(project.pk) if project else "",
        "name": "Daily",
        "kind": PolicyKind.BUDGET,
        "action": PolicyAction.BLOCK,
        "enabled": "on",
        "priority": "0",
        "description": "",
        "config": '{"amount_usd": 5, "window": "day", "timezone": "UTC"}',
    }
    return {**data, **fields}


def form_errors(response) -> dict:
    return response.context["adminform"].form.errors


# ------------------------------------------------------------------------------
# Policies
# ------------------------------------------------------------------------------
def test_the_policy_pages_open_for_a_superuser(admin_client):
    policy = PolicyFactory(name="Daily OpenAI")
    PolicyFactory(project=None, name="Everywhere")

    listing = admin_client.get(POLICIES)
    adding = admin_client.get(f"{POLICIES}add/")
    changing = admin_client.get(f"{POLICIES}{policy.pk}/change/")

    assert listing.status_code == adding.status_code == changing.status_code == 200
    assert "Daily OpenAI" in listing.text
    assert "global" in listing.text
    assert BUDGETS in listing.text  # the object tool leading to the overview
    # Each kind's example config is shown next to the field.
    assert "&quot;max_active&quot;: 2" in adding.text
    assert "global policy" in adding.text


def test_the_policy_list_filters_by_scope_and_kind(admin_client):
    PolicyFactory(name="Local budget")
    PolicyFactory(project=None, name="Global cap", kind=PolicyKind.RUN_CEILING, config={"max_usd": 1})

    global_only = admin_client.get(POLICIES, {"scope": "global"})
    budgets_only = admin_client.get(POLICIES, {"kind__exact": PolicyKind.BUDGET})

    assert "Global cap" in global_only.text
    assert "Local budget" not in global_only.text
    assert "Local budget" in budgets_only.text
    assert "Global cap" not in budgets_only.text


def test_an_invalid_config_is_reported_on_its_field_and_nothing_is_saved(admin_client):
    project = ProjectFactory()

    response = admin_client.post(
        f"{POLICIES}add/", form_data(project, config='{"amount_usd": -1, "window": "fortnight"}')
    )

    assert response.status_code == 200
    messages = " ".join(form_errors(response)["config"])
    assert "amount_usd" in messages
    assert "window" in messages
    assert not Policy.objects.exists()


def test_unreadable_json_is_reported_once_with_the_kinds_example(admin_client):
    response = admin_client.post(f"{POLICIES}add/", form_data(ProjectFactory(), config="{amount_usd: 5"))

    messages = form_errors(response)["config"]
    assert "Enter a valid JSON." in messages
    assert any("Must be a JSON object" in message and "amount_usd" in message for message in messages)
    # Not the default {} judged as a budget's config.
    assert not any("required" in message for message in messages)
    assert not Policy.objects.exists()


def test_an_action_the_kind_cannot_take_is_reported_on_the_action_field(admin_client):
    response = admin_client.post(
        f"{POLICIES}add/",
        form_data(
            ProjectFactory(),
            kind=PolicyKind.RATE_LIMIT,
            action=PolicyAction.REQUIRE_APPROVAL,
            config='{"max_runs": 10, "per": "minute"}',
        ),
    )

    assert "rate_limit" in " ".join(form_errors(response)["action"])
    assert not Policy.objects.exists()


def test_a_valid_policy_is_saved_with_its_author(admin_client, superuser):
    project = ProjectFactory()

    response = admin_client.post(f"{POLICIES}add/", form_data(project, name="Daily demo"))

    assert response.status_code == 302
    stored = Policy.objects.get()
    assert (stored.project, stored.name, stored.config, stored.created_by) == (project, "Daily demo", BUDGET, superuser)


def test_an_empty_project_makes_a_global_policy(admin_client):
    response = admin_client.post(f"{POLICIES}add/", form_data(None, name="Everywhere"))

    assert response.status_code == 302
    assert Policy.objects.get(name="Everywhere").project is None


def test_editing_a_policy_keeps_its_author(admin_client):
    author = UserFactory()
    policy = PolicyFactory(created_by=author, config=BUDGET)

    response = admin_client.post(
        f"{POLICIES}{policy.pk}/change/",
        form_data(policy.project, name=policy.name, config='{"amount_usd": 7.5, "window": "week"}'),
    )

    assert response.status_code == 302
    policy.refresh_from_db()
    assert policy.config == {"amount_usd": 7.5, "window": "week"}
    assert policy.created_by == author


# ------------------------------------------------------------------------------
# Decisions and the ledger: read-only
# ------------------------------------------------------------------------------
def test_the_decision_list_shows_decisions_and_filters_by_outcome(admin_client):
    blocked = PolicyDecisionFactory(reason="Budget 'Daily' is spent.")
    PolicyDecisionFactory(outcome=Outcome.WARNED, stage=Stage.ADMISSION, reason="Close to the limit.")

    every = admin_client.get(DECISIONS)
    only_blocked = admin_client.get(DECISIONS, {"outcome__exact": Outcome.BLOCKED})

    assert every.status_code == 200
    assert "Close to the limit." in every.text
    assert blocked.policy.name in only_blocked.text
    assert "Close to the limit." not in only_blocked.text


def test_the_ledger_list_shows_entries_filters_by_provider_and_has_a_date_hierarchy(admin_client):
    SpendEntryFactory(model="echo-1", cost_usd=Decimal("0.25"))
    SpendEntryFactory(provider="openai", model="gpt-4o-mini")
    year = timezone.now().year

    every = admin_client.get(LEDGER)
    echo_only = admin_client.get(LEDGER, {"provider": "echo", "created_at__year": year})

    assert every.status_code == 200
    assert "gpt-4o-mini" in every.text
    assert echo_only.status_code == 200
    assert "0.25" in echo_only.text
    assert "gpt-4o-mini" not in echo_only.text


@pytest.mark.parametrize(("url", "make"), [(DECISIONS, PolicyDecisionFactory), (LEDGER, SpendEntryFactory)])
def test_engine_rows_cannot_be_added_changed_or_deleted(admin_client, url, make):
    row = make()
    model = type(row)
    before = model.objects.values().get(pk=row.pk)

    assert admin_client.get(f"{url}add/").status_code == 403
    assert admin_client.post(f"{url}{row.pk}/change/", {}).status_code == 403
    assert admin_client.get(f"{url}{row.pk}/delete/").status_code == 403
    assert admin_client.post(f"{url}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    # Reading is allowed: the change page renders as a read-only view.
    assert admin_client.get(f"{url}{row.pk}/change/").status_code == 200
    assert model.objects.values().get(pk=row.pk) == before


def thirty_decisions() -> None:
    for _ in range(30):
        PolicyDecisionFactory(policy=PolicyFactory(), run=None)


def thirty_entries() -> None:
    SpendEntryFactory.create_batch(30)


@pytest.mark.parametrize(("url", "make"), [(DECISIONS, thirty_decisions), (LEDGER, thirty_entries)])
def test_engine_row_lists_take_a_bounded_number_of_queries(admin_client, django_assert_max_num_queries, url, make):
    make()  # thirty rows, each of its own project (and policy): related rows come in the same query

    with django_assert_max_num_queries(10):
        response = admin_client.get(url)

    assert response.status_code == 200


# ------------------------------------------------------------------------------
# Budget overview
# ------------------------------------------------------------------------------
def test_the_budget_overview_shows_spent_reserved_and_remaining_from_the_ledger(admin_client):
    project = ProjectFactory(name="Research")
    PolicyFactory(project=project, name="Research daily", config=BUDGET)
    SpendEntryFactory(project=project, cost_usd=Decimal("1.25"))
    SpendEntryFactory(project=project, cost_usd=Decimal("0.25"))
    SpendEntryFactory(project=project, status=EntryStatus.RESERVED, cost_usd=None, reserved_usd=Decimal("0.5"))
    # Yesterday's spend belongs to another window; another project's to another budget.
    SpendEntryFactory(project=project, cost_usd=Decimal("3"), created_at=timezone.now() - timedelta(days=2))
    SpendEntryFactory(cost_usd=Decimal("2"))

    response = admin_client.get(BUDGETS)

    assert response.status_code == 200
    (row,) = dict(response.context["groups"])[project]
    status = row["status"]
    assert (status.amount, status.spent, status.reserved, status.remaining) == (
        Decimal(5),
        Decimal("1.5"),
        Decimal("0.5"),
        Decimal(3),
    )
    assert not status.exhausted
    assert "Research daily" in response.text
    assert "$1.5000" in response.text  # spent
    assert "$3.0000" in response.text  # remaining
    assert 'alt="exhausted"' not in response.text


def test_the_budget_overview_marks_an_exhausted_budget(admin_client):
    project = ProjectFactory()
    PolicyFactory(project=project, name="Tiny", config={"amount_usd": 1, "window": "day"})
    SpendEntryFactory(project=project, cost_usd=Decimal("1.00"))

    response = admin_client.get(BUDGETS)

    (row,) = dict(response.context["groups"])[project]
    assert row["status"].exhausted
    assert row["status"].remaining == 0
    assert 'alt="exhausted"' in response.text


def test_the_budget_overview_shows_a_global_budget_under_each_project(admin_client):
    first, second = ProjectFactory(), ProjectFactory()
    PolicyFactory(project=None, name="Everywhere", config=BUDGET)
    SpendEntryFactory(project=first, cost_usd=Decimal("2"))

    groups = dict(admin_client.get(BUDGETS).context["groups"])

    assert [row["status"].spent for row in groups[first]] == [Decimal(2)]
    assert [row["status"].spent for row in groups[second]] == [Decimal(0)]


def test_the_budget_overview_sends_a_non_staff_user_to_the_login_page(db):
    response = logged_in(UserFactory()).get(BUDGETS)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_the_budget_overview_needs_the_view_policy_permission(db):
    staff = UserFactory(is_staff=True)
    assert logged_in(staff).get(BUDGETS).status_code == 403

    staff.user_permissions.add(Permission.objects.get(codename="view_policy", content_type__app_label="policies"))
    staff = type(staff).objects.get(pk=staff.pk)  # a fresh instance: permissions are cached
    assert logged_in(staff).get(BUDGETS).status_code == 403  # and a role in some project

    MembershipFactory(user=staff, role="viewer")
    assert logged_in(staff).get(BUDGETS).status_code == 200


def test_the_budget_overview_with_no_budgets_offers_to_add_one(admin_client):
    response = admin_client.get(BUDGETS)

    assert response.status_code == 200
    assert "No budgets yet" in response.text
