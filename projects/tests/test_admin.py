"""The admin for projects and memberships: pages open, and the member inline keeps an owner."""

import pytest
from django.test import Client
from django.urls import reverse

from accounts.tests.factories import UserFactory
from projects.models import Membership
from projects.services import LAST_OWNER
from sparkops.roles import Role


@pytest.fixture
def admin_client(db) -> Client:
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def inline_post(project, rows: list[tuple[Membership, str, bool]]) -> dict:
    """The change form's POST data; ``rows`` are (membership, role, delete) for the member inline."""
    data = {
        "name": project.name,
        "slug": project.slug,
        "description": project.description,
        "created_by": project.created_by_id or "",
        "memberships-TOTAL_FORMS": len(rows),
        "memberships-INITIAL_FORMS": len(rows),
        "memberships-MIN_NUM_FORMS": 0,
        "memberships-MAX_NUM_FORMS": 1000,
    }
    for i, (membership, role, delete) in enumerate(rows):
        data |= {
            f"memberships-{i}-id": membership.pk,
            f"memberships-{i}-project": project.pk,
            f"memberships-{i}-user": membership.user_id,
            f"memberships-{i}-role": role,
        }
        if delete:
            data[f"memberships-{i}-DELETE"] = "on"
    return data


def team_rows(team, **changes) -> list[tuple[Membership, str, bool]]:
    """Every team membership as it is, except ``role=new_role`` or ``role=None`` to delete it."""
    rows = []
    for role, user in team.members.items():
        membership = Membership.objects.get(project=team.project, user=user)
        new_role = changes.get(str(role), role)
        rows.append((membership, new_role or role, new_role is None))
    return rows


def change_url(project) -> str:
    return reverse("admin:projects_project_change", args=[project.pk])


def roles(team) -> dict[str, str]:
    return dict(Membership.objects.filter(project=team.project).values_list("user__email", "role"))


def test_a_superuser_can_open_the_project_changelist(admin_client, team):
    response = admin_client.get(reverse("admin:projects_project_changelist"))
    assert response.status_code == 200
    assert {team.project.name, team.other_project.name} <= {str(p) for p in response.context["cl"].result_list}


def test_the_project_changelist_searches_by_name(admin_client, team):
    response = admin_client.get(reverse("admin:projects_project_changelist"), {"q": team.other_project.name})
    assert list(response.context["cl"].result_list) == [team.other_project]


def test_a_superuser_can_open_a_project_with_its_member_inline(admin_client, team):
    response = admin_client.get(change_url(team.project))
    assert response.status_code == 200
    (inline,) = response.context["inline_admin_formsets"]
    assert {form.instance.user for form in inline.formset.initial_forms} == set(team.members.values())
    for user in team.members.values():
        assert user.email in response.content.decode()


def test_a_superuser_can_open_the_membership_changelist(admin_client, team):
    response = admin_client.get(reverse("admin:projects_membership_changelist"))
    assert response.status_code == 200
    assert set(response.context["cl"].result_list) == set(Membership.objects.all())


def test_a_superuser_can_open_a_membership(admin_client, team):
    membership = Membership.objects.get(project=team.project, user=team.members[Role.VIEWER])
    response = admin_client.get(reverse("admin:projects_membership_change", args=[membership.pk]))
    assert response.status_code == 200
    assert team.members[Role.VIEWER].email in response.content.decode()


def test_staff_without_permissions_cannot_open_the_project_changelist(team):
    client = Client()
    client.force_login(UserFactory(is_staff=True))
    assert client.get(reverse("admin:projects_project_changelist")).status_code == 403


def test_saving_the_inline_with_its_owner_intact_works(admin_client, team):
    response = admin_client.post(change_url(team.project), inline_post(team.project, team_rows(team, viewer="admin")))
    assert response.status_code == 302, response.context["inline_admin_formsets"][0].formset.non_form_errors()
    assert roles(team)[team.members[Role.VIEWER].email] == Role.ADMIN


@pytest.mark.parametrize("change", [{"owner": "admin"}, {"owner": None}], ids=["demoted", "deleted"])
def test_it_refuses_saving_the_inline_with_no_owner_left(admin_client, team, change):
    before = roles(team)
    response = admin_client.post(change_url(team.project), inline_post(team.project, team_rows(team, **change)))
    assert response.status_code == 200  # the form again, with the error
    formset = response.context["inline_admin_formsets"][0].formset
    assert formset.non_form_errors() == [LAST_OWNER]
    assert LAST_OWNER in response.content.decode().replace("&#x27;", "'")
    assert roles(team) == before
