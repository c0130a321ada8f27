"""Project roles, shared by memberships, API keys and the scoped viewsets.

Ordered owner > admin > developer > viewer: a role may do everything the roles below it may.
"""

from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    DEVELOPER = "developer", "Developer"
    VIEWER = "viewer", "Viewer"

    @classmethod
    def rank(cls, role: str | None) -> int:
        return _RANK.get(role, 0)

    @classmethod
    def at_least(cls, role: str | None, minimum: str) -> bool:
        return cls.rank(role) >= cls.rank(minimum)

    @classmethod
    def lowest(cls, *roles: str) -> str:
        return min(roles, key=cls.rank)


_RANK = {Role.VIEWER: 1, Role.DEVELOPER: 2, Role.ADMIN: 3, Role.OWNER: 4}
