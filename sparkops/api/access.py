"""Who may do what in which project, computed once per request.

A user acts with their membership role. An API key acts for its creator in its one project,
with the lower of the key's role and the creator's current role, so demoting or removing the
creator takes effect on their keys at once.
"""

import uuid

from rest_framework import exceptions
from rest_framework.request import Request

from accounts.models import ApiKey
from projects.models import Membership
from sparkops.roles import Role

_CACHE_ATTR = "_sparkops_project_roles"
NO_SUCH_PROJECT = "No such project."


def api_key_of(request: Request) -> ApiKey | None:
    auth = getattr(request, "auth", None)
    return auth if isinstance(auth, ApiKey) else None


def project_roles(request: Request) -> dict[uuid.UUID, str]:
    """Project id -> the caller's effective role, for every project the caller may see."""
    roles = getattr(request, _CACHE_ATTR, None)
    if roles is not None:
        return roles
    roles = {}
    if request.user and request.user.is_authenticated:
        memberships = Membership.objects.filter(user=request.user).values_list("project_id", "role")
        key = api_key_of(request)
        if key is not None:
            memberships = memberships.filter(project_id=key.project_id)
        roles = {pid: (Role.lowest(role, key.role) if key else role) for pid, role in memberships}
    setattr(request, _CACHE_ATTR, roles)
    return roles


def role_in(request: Request, project_id) -> str | None:
    return project_roles(request).get(project_id)


def requested_project_ids(request: Request) -> list[uuid.UUID]:
    """The projects a read is about: every project the caller is in, or the one ``?project=``
    names. A project the caller is not in, a malformed id included, reads as not existing (404),
    the same answer as for an object of another project."""
    raw = request.query_params.get("project")
    if not raw:
        return list(project_roles(request))
    try:
        project_id = uuid.UUID(raw)
    except ValueError:
        raise exceptions.NotFound(NO_SUCH_PROJECT) from None
    if project_id not in project_roles(request):
        raise exceptions.NotFound(NO_SUCH_PROJECT)
    return [project_id]
