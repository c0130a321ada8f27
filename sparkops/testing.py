"""Test helpers shared by every app: a project with one member of each role and an outsider,
and API clients that act as each of them."""

from dataclasses import dataclass, field

from rest_framework.test import APIClient

from accounts.models import User
from accounts.tokens import tokens_for_user
from sparkops.roles import Role

ROLES = [Role.OWNER, Role.ADMIN, Role.DEVELOPER, Role.VIEWER]


def client_for(user: User | None = None, *, api_key: str | None = None) -> APIClient:
    """An API client authenticated the way the frontend (JWT) or a program (API key) would be."""
    client = APIClient()
    if api_key is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key}")
    elif user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens_for_user(user)['access']}")
    return client


@dataclass
class Team:
    """One project, a member of each role, and an outsider who is in another project."""

    project: object
    members: dict[str, User] = field(default_factory=dict)
    outsider: User | None = None
    other_project: object = None

    def client(self, who: str) -> APIClient:
        """``who`` is a role name or "outsider"."""
        return client_for(self.outsider if who == "outsider" else self.members[who])


def make_team() -> Team:
    from projects.tests.factories import MembershipFactory, ProjectFactory

    project = ProjectFactory()
    team = Team(project=project)
    for role in ROLES:
        team.members[role] = MembershipFactory(project=project, role=role).user
    outsider_membership = MembershipFactory(role=Role.OWNER)
    team.outsider, team.other_project = outsider_membership.user, outsider_membership.project
    return team
