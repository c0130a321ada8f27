"""The policies API: scoping, roles, validation, budget status, decisions and the ledger."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from policies.choices import EntryStatus, Outcome, Stage
from policies.models import Policy, PolicyDecision, SpendEntry
from projects.tests.factories import MembershipFactory
from runs.tests.factories import tool
from sparkops.testing import client_for

pytestmark = pytest.mark.django_db

BUDGET = {"amount_usd": 10, "window": "day", "timezone": "UTC"}


def policy(project=None, name="Daily", kind="budget", config=None, **fields) -> Policy:
    return Policy.objects.create(project=project, name=name, kind=kind, config=config or BUDGET, **fields)


def spend(project, cost: str, status=EntryStatus.SETTLED, **fields) -> SpendEntry:
    values = {"cost_usd": Decimal(cost)} if status == EntryStatus.SETTLED else {"reserved_usd": Decimal(cost)}
    return SpendEntry.objects.create(
        project=project, provider="echo", model="echo-1", status=status, created_at=timezone.now(), **values, **fields
    )


def test_members_see_their_projects_policies_and_the_global_ones(team):
    own, global_ = policy(team.project), policy(None, name="Everywhere")
    policy(team.other_project, name="Theirs")
    response = team.client("viewer").get("/api/v1/policies")
    assert response.status_code == 200
    assert {row["id"] for row in response.json()["results"]} == {own.pk, global_.pk}


def test_a_policy_of_another_project_is_not_found(team):
    theirs = policy(team.other_project)
    assert team.client("owner").get(f"/api/v1/policies/{theirs.pk}").status_code == 404
    assert team.client("owner").get(f"/api/v1/policies?project={team.other_project.pk}").status_code == 404


def test_an_admin_creates_a_policy_and_is_recorded_as_its_author(team):
    response = team.client("admin").post(
        "/api/v1/policies",
        {"project": str(team.project.pk), "name": "Daily", "kind": "budget", "config": BUDGET, "action": "warn"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    stored = Policy.objects.get(pk=response.json()["id"])
    assert (stored.created_by, stored.action, stored.config) == (team.members["admin"], "warn", BUDGET)


def test_a_developer_may_not_change_spend_rules(team):
    response = team.client("developer").post(
        "/api/v1/policies",
        {"project": str(team.project.pk), "name": "Daily", "kind": "budget", "config": BUDGET},
        format="json",
    )
    assert response.status_code == 403
    assert not Policy.objects.exists()


def test_it_rejects_a_config_with_field_level_messages(team):
    response = team.client("admin").post(
        "/api/v1/policies",
        {"project": str(team.project.pk), "name": "Daily", "kind": "budget", "config": {"window": "rolling"}},
        format="json",
    )
    assert response.status_code == 400
    messages = " ".join(response.json()["errors"]["config"])
    assert "amount_usd" in messages
    assert not Policy.objects.exists()


def test_it_rejects_an_action_the_kind_cannot_take(team):
    response = team.client("admin").post(
        "/api/v1/policies",
        {
            "project": str(team.project.pk),
            "name": "Per minute",
            "kind": "rate_limit",
            "config": {"max_runs": 5, "per": "minute"},
            "action": "require_approval",
        },
        format="json",
    )
    assert response.status_code == 400
    assert "rate_limit" in response.json()["errors"]["action"][0]


def test_it_rejects_a_second_policy_with_the_same_name(team):
    policy(team.project)
    response = team.client("admin").post(
        "/api/v1/policies",
        {"project": str(team.project.pk), "name": "Daily", "kind": "budget", "config": BUDGET},
        format="json",
    )
    assert response.status_code == 400
    assert Policy.objects.count() == 1


def test_only_staff_create_or_change_global_policies(team):
    payload = {"name": "Everywhere", "kind": "budget", "config": BUDGET}
    assert team.client("owner").post("/api/v1/policies", payload, format="json").status_code == 403
    staff = team.members["owner"]
    staff.is_staff = True
    staff.save(update_fields=["is_staff"])
    response = client_for(staff).post("/api/v1/policies", payload, format="json")
    assert response.status_code == 201, response.json()
    created = Policy.objects.get(pk=response.json()["id"])
    assert created.project is None
    patch = team.client("admin").patch(f"/api/v1/policies/{created.pk}", {"enabled": False}, format="json")
    assert patch.status_code == 403
    assert Policy.objects.get(pk=created.pk).enabled


def test_an_update_is_validated_against_the_stored_kind(team):
    stored = policy(team.project)
    response = team.client("admin").patch(
        f"/api/v1/policies/{stored.pk}", {"config": {"amount_usd": -1, "window": "day"}}, format="json"
    )
    assert response.status_code == 400
    assert "amount_usd" in response.json()["errors"]["config"][0]
    assert Policy.objects.get(pk=stored.pk).config == BUDGET


def test_an_admin_edits_a_policy_with_patch(team):
    stored = policy(team.project)
    response = team.client("admin").patch(
        f"/api/v1/policies/{stored.pk}",
        {"config": {"amount_usd": 20, "window": "week"}, "action": "warn", "enabled": False},
        format="json",
    )
    assert response.status_code == 200, response.json()
    stored.refresh_from_db()
    assert (stored.config, stored.action, stored.enabled) == ({"amount_usd": 20, "window": "week"}, "warn", False)


def test_an_admin_replaces_a_policy_with_put(team):
    stored = policy(team.project)
    payload = {
        "project": str(team.project.pk),
        "name": "Renamed",
        "kind": "budget",
        "config": {"amount_usd": 5, "window": "rolling", "days": 7},
        "priority": 3,
    }
    response = team.client("admin").put(f"/api/v1/policies/{stored.pk}", payload, format="json")
    assert response.status_code == 200, response.json()
    stored.refresh_from_db()
    assert (stored.name, stored.priority, stored.config["days"]) == ("Renamed", 3, 7)


def test_staff_edit_a_global_policy(team):
    stored = policy(None, name="Everywhere")
    staff = team.members["owner"]
    staff.is_staff = True
    staff.save(update_fields=["is_staff"])
    response = client_for(staff).patch(f"/api/v1/policies/{stored.pk}", {"priority": 7}, format="json")
    assert response.status_code == 200, response.json()
    assert Policy.objects.get(pk=stored.pk).priority == 7


def test_a_developer_may_not_edit_a_policy(team):
    stored = policy(team.project)
    response = team.client("developer").patch(f"/api/v1/policies/{stored.pk}", {"enabled": False}, format="json")
    assert response.status_code == 403
    assert Policy.objects.get(pk=stored.pk).enabled


def test_an_edit_may_not_take_another_policys_name(team):
    policy(team.project, name="Taken")
    stored = policy(team.project)
    response = team.client("admin").patch(f"/api/v1/policies/{stored.pk}", {"name": "Taken"}, format="json")
    assert response.status_code == 400
    assert Policy.objects.get(pk=stored.pk).name == "Daily"


def test_a_policy_never_changes_kind_or_project(team):
    stored = policy(team.project)
    admin = team.client("admin")
    rate_limit = {"kind": "rate_limit", "config": {"max_runs": 5, "per": "minute"}}
    kind = admin.patch(f"/api/v1/policies/{stored.pk}", rate_limit, format="json")
    assert kind.status_code == 400
    assert "kind" in kind.json()["errors"]
    MembershipFactory(project=team.other_project, user=team.members["admin"], role="admin")
    moved = admin.patch(f"/api/v1/policies/{stored.pk}", {"project": str(team.other_project.pk)}, format="json")
    assert moved.status_code == 400
    assert "project" in moved.json()["errors"]
    stored.refresh_from_db()
    assert (stored.kind, stored.project_id) == ("budget", team.project.pk)


def test_budget_status_counts_settled_and_reserved_spend_in_the_window(team):
    budget = policy(team.project)
    spend(team.project, "2.50")
    spend(team.project, "1.00", status=EntryStatus.RESERVED)
    old = spend(team.project, "5.00")
    SpendEntry.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
    spend(team.other_project, "7.00")
    response = team.client("viewer").get(f"/api/v1/policies/{budget.pk}/status")
    assert response.status_code == 200
    (status,) = response.json()
    assert Decimal(status["spent_usd"]) == Decimal("2.5")
    assert Decimal(status["reserved_usd"]) == Decimal("1")
    assert Decimal(status["remaining_usd"]) == Decimal("6.5")
    assert status["exhausted"] is False
    assert status["window_start"] < status["window_end"]


def test_only_budgets_have_a_spend_status(team):
    ceiling = policy(team.project, kind="run_ceiling", config={"max_usd": 1})
    response = team.client("viewer").get(f"/api/v1/policies/{ceiling.pk}/status")
    assert response.status_code == 400
    assert "kind" in response.json()["errors"]


def test_budgets_list_a_global_budget_once_per_project_of_the_caller(team):
    policy(team.project, name="Project")
    policy(None, name="Everywhere")
    policy(team.other_project, name="Theirs")
    response = team.client("viewer").get("/api/v1/budgets")
    assert response.status_code == 200
    names = sorted(row["policy_name"] for row in response.json())
    assert names == ["Everywhere", "Project"]
    assert team.client("viewer").get(f"/api/v1/budgets?project={team.other_project.pk}").status_code == 404


def test_decisions_and_ledger_are_scoped_to_the_callers_projects(team, django_assert_max_num_queries):
    budget = policy(team.project)
    for n in range(3):
        PolicyDecision.objects.create(
            policy=budget, project=team.project, stage=Stage.CALL, outcome=Outcome.BLOCKED, reason=f"r{n}"
        )
        spend(team.project, "0.10")
    PolicyDecision.objects.create(project=team.other_project, stage=Stage.CALL, outcome=Outcome.WARNED, reason="x")
    spend(team.other_project, "9.00")
    client = team.client("viewer")
    with django_assert_max_num_queries(6):
        decisions = client.get("/api/v1/policy-decisions").json()["results"]
    assert {d["reason"] for d in decisions} == {"r0", "r1", "r2"}
    assert decisions[0]["policy_name"] == "Daily"
    with django_assert_max_num_queries(6):
        entries = client.get("/api/v1/spend").json()["results"]
    assert [Decimal(e["cost_usd"]) for e in entries] == [Decimal("0.1")] * 3
    assert team.client("outsider").get("/api/v1/spend").json()["results"][0]["cost_usd"] == "9.000000"


def test_ledger_filters_by_status(team):
    spend(team.project, "0.10")
    spend(team.project, "0.20", status=EntryStatus.RESERVED)
    rows = team.client("viewer").get("/api/v1/spend?status=reserved").json()["results"]
    assert [row["reserved_usd"] for row in rows] == ["0.200000"]


# ------------------------------------------------------------------------------
# Test runs of a tool answer to allow-lists and approval rules
# ------------------------------------------------------------------------------
def run_once(client, tool):
    return client.post(f"/api/v1/tools/{tool.pk}/test", {"input": {"expression": "6*7"}}, format="json")


@pytest.mark.parametrize(("who", "allowed"), [("developer", False), ("admin", True), ("owner", True)])
def test_a_tool_that_requires_approval_is_test_run_only_by_who_may_approve_it(team, who, allowed):
    deploy = tool(team.project, "deploy", requires_approval=True)

    response = run_once(team.client(who), deploy)

    if allowed:
        assert response.json() == {"ok": True, "output": 42, "latency_ms": response.json()["latency_ms"]}
    else:
        assert response.status_code == 403
        assert response.json()["message"] == (
            "Tool 'deploy' requires approval for every call. "
            "Test-running it needs whoever may approve its calls: the admin role."
        )


def test_a_tool_an_approval_rule_covers_is_test_run_by_the_role_the_rule_names(team):
    wipe = tool(team.project, "wipe", risk_class="destructive")
    rule = {"risk_class": "destructive", "role": "owner"}
    policy(team.project, name="Risky", kind="approval", config=rule, action="require_approval")

    assert run_once(team.client("admin"), wipe).status_code == 403
    assert run_once(team.client("owner"), wipe).json()["ok"] is True


def test_a_tool_off_the_allow_list_is_test_run_by_nobody(team):
    calc = tool(team.project, "calc")
    policy(team.project, name="Tools", kind="tool_allowlist", config={"tools": ["search"]}, action="block")

    response = run_once(team.client("owner"), calc)

    assert response.status_code == 403
    assert response.json()["message"] == (
        "Tool 'calc' is not on the allow-list of 'Tools'. Test runs are judged like calls in a run."
    )


def test_a_tool_a_global_rule_covers_is_test_run_only_by_staff(team):
    deploy = tool(team.project, "deploy")
    policy(None, name="Global", kind="approval", config={"tools": ["deploy"]}, action="require_approval")
    owner = team.members["owner"]

    assert run_once(team.client("owner"), deploy).status_code == 403
    owner.is_staff = True
    owner.save(update_fields=["is_staff"])
    assert run_once(client_for(owner), deploy).json()["ok"] is True
