"""Staff who are not superusers in the admin: they see the rows of projects where they hold a role,
change them with that role's rights, pick related rows only from there, and nothing else
(sparkops/admin_scoping.py). Superusers see everything."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from accounts.models import ApiKey
from accounts.tests.factories import ApiKeyFactory, UserFactory
from agents.models import Agent
from agents.tests.factories import CredentialFactory
from policies.models import Policy
from policies.tests.factories import PolicyFactory
from projects.models import Membership
from projects.tests.factories import MembershipFactory, ProjectFactory
from runs.tests.factories import echo_agent
from sparkops.roles import Role

pytestmark = pytest.mark.django_db
APPS = (
    "accounts",
    "projects",
    "agents",
    "workflows",
    "policies",
    "runs",
    "schedules",
    "webhooks",
    "audit",
    "taskboard",
)


def staff(roles: dict, *, everything: bool = True) -> Client:
    """A staff user with every model permission of our apps, and ``roles`` (project -> role)."""
    user = UserFactory(is_staff=True)
    if everything:
        user.user_permissions.add(*Permission.objects.filter(content_type__app_label__in=APPS))
    for project, role in roles.items():
        MembershipFactory(user=user, project=project, role=role)
    client = Client()
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture
def three():
    """Projects where the staff user is developer (mine), viewer (watched), nothing (theirs)."""
    mine, watched, theirs = ProjectFactory(name="Mine"), ProjectFactory(name="Watched"), ProjectFactory(name="Theirs")
    agents = {p.name: echo_agent(p, "writer") for p in (mine, watched, theirs)}
    return mine, watched, theirs, agents


def test_lists_show_only_the_rows_of_projects_where_staff_hold_a_role(three):
    mine, watched, _theirs, agents = three
    client = staff({mine: Role.DEVELOPER, watched: Role.VIEWER})

    listed = client.get("/admin/agents/agent/").context["cl"].result_list

    assert {agent.project.name for agent in listed} == {"Mine", "Watched"}
    assert client.get(f"/admin/agents/agent/{agents['Theirs'].pk}/change/").status_code == 302  # "does not exist"
    projects = client.get("/admin/projects/project/").context["cl"].result_list
    assert {p.name for p in projects} == {"Mine", "Watched"}


def test_a_superuser_sees_every_project(three):
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))

    assert len(client.get("/admin/agents/agent/").context["cl"].result_list) == 3


def test_a_viewer_reads_a_row_but_cannot_change_or_delete_it(three):
    mine, watched, _theirs, agents = three
    client = staff({mine: Role.DEVELOPER, watched: Role.VIEWER})
    watched_agent, my_agent = agents["Watched"], agents["Mine"]

    page = client.get(f"/admin/agents/agent/{watched_agent.pk}/change/")
    assert page.status_code == 200
    assert page.context["has_change_permission"] is False
    client.post(f"/admin/agents/agent/{watched_agent.pk}/change/", {"name": "Renamed"})
    assert Agent.objects.get(pk=watched_agent.pk).name != "Renamed"
    assert client.post(f"/admin/agents/agent/{watched_agent.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.get(f"/admin/agents/agent/{my_agent.pk}/change/").context["has_change_permission"] is True


def test_foreign_key_choices_are_the_projects_and_rows_staff_may_write_to(three):
    mine, watched, _theirs, _agents = three
    mine_credential, watched_credential = CredentialFactory(project=mine), CredentialFactory(project=watched)
    client = staff({mine: Role.DEVELOPER, watched: Role.VIEWER})

    form = client.get("/admin/agents/agent/add/").context["adminform"].form

    assert list(form.fields["project"].queryset) == [mine]
    assert list(form.fields["credential"].queryset) == [mine_credential]
    assert watched_credential not in form.fields["credential"].queryset


def test_adding_in_a_project_where_the_role_is_too_low_is_refused_on_the_field(three):
    mine, watched, _theirs, _agents = three
    client = staff({mine: Role.DEVELOPER, watched: Role.VIEWER})
    body = {"project": str(watched.pk), "name": "Scout", "slug": "scout", "provider": "echo", "model": "echo-1"}
    body |= {"role": "", "system_prompt": "", "parameters": "{}", "max_tool_iterations": 5, "status": "active"}

    response = client.post("/admin/agents/agent/add/", body)

    assert "project" in response.context["adminform"].form.errors
    assert not Agent.objects.filter(slug="scout").exists()


def test_admin_only_models_need_the_admin_role(three):
    mine, _watched, _theirs, _agents = three
    developer = staff({mine: Role.DEVELOPER})
    admin = staff({mine: Role.ADMIN})

    assert developer.get("/admin/schedules/schedule/add/").status_code == 403
    assert developer.get("/admin/agents/providercredential/add/").status_code == 403
    assert developer.get("/admin/policies/policy/add/").status_code == 403
    assert admin.get("/admin/schedules/schedule/add/").status_code == 200
    assert admin.get("/admin/policies/policy/add/").status_code == 200


def test_global_policies_are_read_by_staff_and_written_by_superusers_only(three):
    mine, *_ = three
    global_policy = PolicyFactory(project=None, name="Everyone's cap")
    admin = staff({mine: Role.OWNER})

    assert global_policy in admin.get("/admin/policies/policy/").context["cl"].result_list
    page = admin.get(f"/admin/policies/policy/{global_policy.pk}/change/")
    assert page.context["has_change_permission"] is False
    form = admin.get("/admin/policies/policy/add/").context["adminform"].form
    assert form.fields["project"].required is True  # no new global policy
    assert Policy.objects.get(pk=global_policy.pk).name == "Everyone's cap"


def test_only_owners_grant_the_owner_role(three):
    mine, *_ = three
    admin = staff({mine: Role.ADMIN})
    newcomer = UserFactory()

    response = admin.post("/admin/projects/membership/add/", {"user": newcomer.pk, "project": mine.pk, "role": "owner"})

    assert "role" in response.context["adminform"].form.errors
    assert not Membership.objects.filter(user=newcomer).exists()
    admin.post("/admin/projects/membership/add/", {"user": newcomer.pk, "project": mine.pk, "role": "developer"})
    assert Membership.objects.get(user=newcomer).role == Role.DEVELOPER


def test_deleting_a_project_needs_its_owner(three):
    mine, watched, *_ = three
    admin = staff({mine: Role.ADMIN})
    owner = staff({watched: Role.OWNER})

    assert admin.get(f"/admin/projects/project/{mine.pk}/delete/").status_code == 403
    assert owner.get(f"/admin/projects/project/{watched.pk}/delete/").status_code == 200


def test_a_project_added_by_staff_is_owned_by_them():
    client = staff({})

    client.post(
        "/admin/projects/project/add/",
        {"name": "Fresh", "slug": "fresh", "description": "", "memberships-TOTAL_FORMS": 0,
         "memberships-INITIAL_FORMS": 0},
    )  # fmt: skip

    assert Membership.objects.get(project__slug="fresh").user == client.user
    assert Membership.objects.get(project__slug="fresh").role == Role.OWNER


def test_api_keys_listed_are_their_own_and_those_of_projects_they_administer(three):
    mine, watched, *_ = three
    client = staff({mine: Role.ADMIN, watched: Role.VIEWER})
    colleague = MembershipFactory(project=watched, role=Role.OWNER).user
    theirs = ApiKeyFactory(project=watched, created_by=colleague)
    own = ApiKeyFactory(project=watched, created_by=client.user, role=Role.VIEWER)
    administered = ApiKeyFactory(project=mine, created_by=MembershipFactory(project=mine).user)

    listed = set(client.get("/admin/accounts/apikey/").context["cl"].result_list)
    client.post("/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [own.pk, theirs.pk]})

    assert listed == {own, administered}
    assert ApiKey.objects.get(pk=own.pk).revoked_at is not None
    assert ApiKey.objects.get(pk=theirs.pk).revoked_at is None


def test_staff_see_the_people_of_their_projects_and_change_nobody(three):
    mine, *_ = three
    colleague, stranger = MembershipFactory(project=mine).user, UserFactory()
    client = staff({mine: Role.OWNER})

    people = set(client.get("/admin/accounts/user/").context["cl"].result_list)

    assert colleague in people
    assert stranger not in people
    assert client.get(f"/admin/accounts/user/{colleague.pk}/change/").context["has_change_permission"] is False
    client.post(f"/admin/accounts/user/{client.user.pk}/change/", {"email": client.user.email, "is_superuser": "on"})
    client.user.refresh_from_db()
    assert client.user.is_superuser is False


def test_the_member_picker_finds_anyone_by_exact_email_only(three):
    mine, *_ = three
    stranger = UserFactory(email="new.hire@example.com")
    client = staff({mine: Role.ADMIN})
    url = "/admin/autocomplete/"
    params = {"app_label": "projects", "model_name": "membership", "field_name": "user"}

    partial = client.get(url, params | {"term": "new.hire"}).json()["results"]
    exact = client.get(url, params | {"term": "new.hire@example.com"}).json()["results"]

    assert partial == []
    assert [row["id"] for row in exact] == [str(stranger.pk)]


def test_staff_in_no_project_see_no_list_and_may_add_nothing_but_a_project():
    client = staff({})

    assert client.get("/admin/agents/agent/").status_code == 403
    assert client.get("/admin/agents/agent/add/").status_code == 403
    assert client.get("/admin/projects/project/add/").status_code == 200


@pytest.mark.parametrize("role", [Role.VIEWER, Role.DEVELOPER, Role.ADMIN, Role.OWNER])
def test_every_page_of_ours_opens_for_scoped_staff_of_each_role(three, role):
    from django.contrib import admin

    mine, *_ = three
    PolicyFactory(project=mine)
    client = staff({mine: role})
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label not in APPS:
            continue
        base = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        listed = client.get(base)
        if not Role.at_least(role, getattr(model_admin, "read_role", Role.VIEWER)):
            assert listed.status_code == 403, base  # webhooks and the trail: admins only
            continue
        assert listed.status_code == 200, base
        assert client.get(f"{base}add/").status_code in (200, 403), base
        for row in listed.context["cl"].result_list[:2]:
            assert client.get(f"{base}{row.pk}/change/").status_code == 200, (base, row.pk)
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/policies/policy/budgets/").status_code == 200


def test_an_archived_project_is_read_only_in_the_admin_for_superusers_too(three):
    mine, *_, agents = three
    mine.archived = True
    mine.save()
    superuser = Client()
    superuser.force_login(UserFactory(is_staff=True, is_superuser=True))
    owner = staff({mine: Role.OWNER})

    for client in (superuser, owner):
        page = client.get(f"/admin/agents/agent/{agents['Mine'].pk}/change/")
        assert page.context["has_change_permission"] is False
        assert page.context["has_delete_permission"] is False
        assert mine not in client.get("/admin/agents/agent/add/").context["adminform"].form.fields["project"].queryset
    # Unarchiving, and its members, stay in reach.
    assert owner.get(f"/admin/projects/project/{mine.pk}/change/").context["has_change_permission"] is True
