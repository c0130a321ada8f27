"""Project and membership services, called directly: the role rules the API and the admin share."""

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from accounts.tests.factories import UserFactory
from projects import services
from projects.models import Membership, Project
from projects.tests.factories import MembershipFactory, ProjectFactory
from sparkops.roles import Role

pytestmark = pytest.mark.django_db

NOT_MANAGERS = [Role.DEVELOPER, Role.VIEWER, None]


def roles_in(project: Project) -> dict[str, str]:
    return dict(project.memberships.values_list("user__email", "role"))


# ------------------------------------------------------------------------------
# project_create / project_update / project_delete
# ------------------------------------------------------------------------------
def test_project_create_makes_the_creator_its_owner():
    user = UserFactory()
    project = services.project_create(user=user, name="Support bots", description="Tier 1")
    project.refresh_from_db()
    assert (project.slug, project.description, project.created_by, project.archived) == (
        "support-bots",
        "Tier 1",
        user,
        False,
    )
    assert roles_in(project) == {user.email: Role.OWNER}


def test_project_create_numbers_derived_slugs_until_unique():
    ProjectFactory(slug="support-bots")
    ProjectFactory(slug="support-bots-2")
    project = services.project_create(user=UserFactory(), name="Support bots")
    assert project.slug == "support-bots-3"


def test_project_create_trims_a_long_derived_slug_to_leave_room_for_a_suffix():
    name = "x" * 80
    first = services.project_create(user=UserFactory(), name=name)
    second = services.project_create(user=UserFactory(), name=name)
    assert first.slug == "x" * 56
    assert second.slug == "x" * 56 + "-2"


def test_project_create_keeps_an_explicit_slug_and_archived_flag():
    project = services.project_create(user=UserFactory(), name="Old", slug="legacy", archived=True)
    project.refresh_from_db()
    assert (project.slug, project.archived) == ("legacy", True)


def test_project_create_refuses_a_taken_slug_and_writes_nothing():
    ProjectFactory(slug="taken")
    with pytest.raises(ValidationError) as caught:
        services.project_create(user=UserFactory(), name="Copy", slug="taken")
    assert "slug" in caught.value.message_dict
    assert not Project.objects.filter(name="Copy").exists()
    assert not Membership.objects.exists()


@pytest.mark.parametrize(
    ("fields", "error_on"), [({"name": ""}, "name"), ({"name": "Ok", "slug": "no spaces"}, "slug")]
)
def test_project_create_validates_before_saving(fields, error_on):
    with pytest.raises(ValidationError) as caught:
        services.project_create(user=UserFactory(), **fields)
    assert error_on in caught.value.message_dict
    assert not Project.objects.exists()


def test_project_update_saves_the_given_fields():
    project = ProjectFactory(name="Before")
    services.project_update(project=project, name="After", archived=True)
    project.refresh_from_db()
    assert (project.name, project.archived) == ("After", True)


def test_project_update_refuses_a_slug_of_another_project():
    other, project = ProjectFactory(slug="other"), ProjectFactory(slug="mine")
    with pytest.raises(ValidationError):
        services.project_update(project=project, slug=other.slug)
    project.refresh_from_db()
    assert project.slug == "mine"


def test_project_delete_removes_the_project_and_its_memberships():
    membership = MembershipFactory(role=Role.OWNER)
    keep = MembershipFactory()
    services.project_delete(project=membership.project)
    assert not Project.objects.filter(pk=membership.project_id).exists()
    assert list(Membership.objects.all()) == [keep]


# ------------------------------------------------------------------------------
# membership_add
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("actor_role", [Role.OWNER, Role.ADMIN])
def test_membership_add_lets_admins_add_a_registered_user(actor_role):
    project, user = ProjectFactory(), UserFactory(email="ada@example.com")
    membership = services.membership_add(
        project=project, actor_role=actor_role, email=" Ada@Example.com ", role=Role.DEVELOPER
    )
    assert (membership.user, membership.role) == (user, Role.DEVELOPER)
    assert roles_in(project) == {"ada@example.com": Role.DEVELOPER}


@pytest.mark.parametrize("actor_role", NOT_MANAGERS)
def test_membership_add_refuses_non_admins(actor_role):
    project, user = ProjectFactory(), UserFactory()
    with pytest.raises(PermissionDenied):
        services.membership_add(project=project, actor_role=actor_role, email=user.email, role=Role.VIEWER)
    assert not project.memberships.exists()


def test_membership_add_lets_only_owners_grant_owner():
    project, user = ProjectFactory(), UserFactory()
    with pytest.raises(PermissionDenied, match="Only owners"):
        services.membership_add(project=project, actor_role=Role.ADMIN, email=user.email, role=Role.OWNER)
    services.membership_add(project=project, actor_role=Role.OWNER, email=user.email, role=Role.OWNER)
    assert roles_in(project) == {user.email: Role.OWNER}


@pytest.mark.parametrize("is_active", [True, False])
def test_membership_add_refuses_an_email_of_no_active_user(is_active):
    project = ProjectFactory()
    email = "ghost@example.com"
    if not is_active:
        UserFactory(email=email, is_active=False)
    with pytest.raises(ValidationError) as caught:
        services.membership_add(project=project, actor_role=Role.OWNER, email=email, role=Role.VIEWER)
    assert list(caught.value.message_dict) == ["email"]
    assert not project.memberships.exists()


def test_membership_add_refuses_an_existing_member_on_the_email_field():
    existing = MembershipFactory(role=Role.VIEWER)
    with pytest.raises(ValidationError) as caught:
        services.membership_add(
            project=existing.project, actor_role=Role.OWNER, email=existing.user.email, role=Role.ADMIN
        )
    assert caught.value.message_dict == {"email": ["This user is already a member of the project."]}
    existing.refresh_from_db()
    assert existing.role == Role.VIEWER


def test_membership_add_refuses_an_unknown_role():
    project, user = ProjectFactory(), UserFactory()
    with pytest.raises(ValidationError) as caught:
        services.membership_add(project=project, actor_role=Role.OWNER, email=user.email, role="root")
    assert "role" in caught.value.message_dict
    assert not project.memberships.exists()


# ------------------------------------------------------------------------------
# membership_change_role
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("actor_role", [Role.OWNER, Role.ADMIN])
def test_membership_change_role_lets_admins_change_non_owners(actor_role):
    membership = MembershipFactory(role=Role.VIEWER)
    services.membership_change_role(membership=membership, actor_role=actor_role, role=Role.ADMIN)
    membership.refresh_from_db()
    assert membership.role == Role.ADMIN


@pytest.mark.parametrize("actor_role", NOT_MANAGERS)
def test_membership_change_role_refuses_non_admins(actor_role):
    membership = MembershipFactory(role=Role.VIEWER)
    with pytest.raises(PermissionDenied):
        services.membership_change_role(membership=membership, actor_role=actor_role, role=Role.DEVELOPER)
    membership.refresh_from_db()
    assert membership.role == Role.VIEWER


@pytest.mark.parametrize(("current", "new"), [(Role.VIEWER, Role.OWNER), (Role.OWNER, Role.VIEWER)])
def test_membership_change_role_refuses_an_admin_touching_the_owner_role(current, new):
    project = MembershipFactory(role=Role.OWNER).project
    membership = MembershipFactory(project=project, role=current)
    with pytest.raises(PermissionDenied, match="Only owners"):
        services.membership_change_role(membership=membership, actor_role=Role.ADMIN, role=new)
    membership.refresh_from_db()
    assert membership.role == current


def test_membership_change_role_refuses_demoting_the_last_owner():
    owner = MembershipFactory(role=Role.OWNER)
    MembershipFactory(project=owner.project, role=Role.ADMIN)
    with pytest.raises(ValidationError) as caught:
        services.membership_change_role(membership=owner, actor_role=Role.OWNER, role=Role.ADMIN)
    assert caught.value.message_dict == {"role": [services.LAST_OWNER]}
    owner.refresh_from_db()
    assert owner.role == Role.OWNER


def test_membership_change_role_lets_an_owner_step_down_when_another_owner_exists():
    owner = MembershipFactory(role=Role.OWNER)
    other = MembershipFactory(project=owner.project, role=Role.OWNER)
    services.membership_change_role(membership=owner, actor_role=Role.OWNER, role=Role.VIEWER)
    assert roles_in(owner.project) == {owner.user.email: Role.VIEWER, other.user.email: Role.OWNER}


def test_membership_change_role_keeps_the_last_owner_an_owner():
    owner = MembershipFactory(role=Role.OWNER)
    services.membership_change_role(membership=owner, actor_role=Role.OWNER, role=Role.OWNER)
    owner.refresh_from_db()
    assert owner.role == Role.OWNER


def test_membership_change_role_refuses_an_unknown_role():
    membership = MembershipFactory(role=Role.VIEWER)
    with pytest.raises(ValidationError):
        services.membership_change_role(membership=membership, actor_role=Role.OWNER, role="root")
    membership.refresh_from_db()
    assert membership.role == Role.VIEWER


# ------------------------------------------------------------------------------
# membership_remove
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("role", [Role.ADMIN, Role.DEVELOPER, Role.VIEWER])
def test_membership_remove_lets_any_member_leave(role):
    MembershipFactory(role=Role.OWNER)
    membership = MembershipFactory(role=role)
    services.membership_remove(membership=membership, actor=membership.user, actor_role=role)
    assert not Membership.objects.filter(pk=membership.pk).exists()


@pytest.mark.parametrize("actor_role", [Role.OWNER, Role.ADMIN])
def test_membership_remove_lets_admins_remove_others(actor_role):
    membership = MembershipFactory(role=Role.DEVELOPER)
    services.membership_remove(membership=membership, actor=UserFactory(), actor_role=actor_role)
    assert not Membership.objects.filter(pk=membership.pk).exists()


@pytest.mark.parametrize("actor_role", NOT_MANAGERS)
def test_membership_remove_refuses_non_admins_removing_others(actor_role):
    membership = MembershipFactory(role=Role.VIEWER)
    with pytest.raises(PermissionDenied):
        services.membership_remove(membership=membership, actor=UserFactory(), actor_role=actor_role)
    assert Membership.objects.filter(pk=membership.pk).exists()


def test_membership_remove_lets_only_owners_remove_an_owner():
    owner = MembershipFactory(role=Role.OWNER)
    other = MembershipFactory(project=owner.project, role=Role.OWNER)
    with pytest.raises(PermissionDenied, match="Only owners"):
        services.membership_remove(membership=other, actor=UserFactory(), actor_role=Role.ADMIN)
    services.membership_remove(membership=other, actor=owner.user, actor_role=Role.OWNER)
    assert roles_in(owner.project) == {owner.user.email: Role.OWNER}


def test_membership_remove_refuses_removing_the_last_owner():
    owner = MembershipFactory(role=Role.OWNER)
    with pytest.raises(ValidationError) as caught:
        services.membership_remove(membership=owner, actor=owner.user, actor_role=Role.OWNER)
    assert caught.value.messages == [services.LAST_OWNER]
    assert Membership.objects.filter(pk=owner.pk).exists()


def test_membership_remove_lets_an_owner_leave_when_another_owner_exists():
    owner = MembershipFactory(role=Role.OWNER)
    other = MembershipFactory(project=owner.project, role=Role.OWNER)
    services.membership_remove(membership=owner, actor=owner.user, actor_role=Role.OWNER)
    assert list(Membership.objects.all()) == [other]


def test_membership_remove_counts_owners_of_the_same_project_only():
    owner = MembershipFactory(role=Role.OWNER)
    MembershipFactory(role=Role.OWNER)  # an owner elsewhere does not count
    with pytest.raises(ValidationError):
        services.membership_remove(membership=owner, actor=owner.user, actor_role=Role.OWNER)
    assert Membership.objects.filter(pk=owner.pk).exists()
