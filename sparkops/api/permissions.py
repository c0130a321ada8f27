"""Permissions shared across apps."""

from rest_framework.permissions import SAFE_METHODS, BasePermission

from .access import api_key_of

API_KEY_REFUSAL = "API keys cannot manage users, memberships or keys; authenticate as a user."


class DenyApiKeys(BasePermission):
    """For endpoints a program must never reach: keys, tokens, profiles."""

    message = API_KEY_REFUSAL

    def has_permission(self, request, view) -> bool:
        return api_key_of(request) is None


class DenyApiKeyWrites(BasePermission):
    """Keys may read these resources but never change them."""

    message = API_KEY_REFUSAL

    def has_permission(self, request, view) -> bool:
        return request.method in SAFE_METHODS or api_key_of(request) is None


class DenyApiKeyProjects(DenyApiKeys):
    """A key lives inside one project: it may not create new ones (it would own them)."""

    message = "API keys cannot create projects; authenticate as a user."
