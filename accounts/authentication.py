"""DRF authentication: JWT for the frontend, API keys for programs."""

from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework_simplejwt import authentication as jwt_authentication

from . import services
from .tokens import TOKEN_VERSION_CLAIM

API_KEY_KEYWORD = "Api-Key"


class JWTAuthentication(jwt_authentication.JWTAuthentication):
    """simplejwt's, plus: tokens minted before the user's last password change are refused."""

    def get_user(self, validated_token):
        user = super().get_user(validated_token)
        if validated_token.get(TOKEN_VERSION_CLAIM, 0) != user.token_version:
            raise exceptions.AuthenticationFailed(_("Token has been revoked."), code="token_not_valid")
        return user


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Api-Key <key>`` or ``X-API-Key: <key>``. ``request.auth`` is the key."""

    def authenticate(self, request):
        raw = self._raw_key(request)
        if raw is None:
            return None
        key = services.api_key_authenticate(raw=raw)
        if key is None:
            raise exceptions.AuthenticationFailed(_("Invalid, expired or revoked API key."), code="invalid_api_key")
        return key.created_by, key

    def authenticate_header(self, request) -> str:
        return API_KEY_KEYWORD

    @staticmethod
    def _raw_key(request) -> str | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        keyword, _, value = header.partition(" ")
        if keyword == API_KEY_KEYWORD and value.strip():
            return value.strip()
        value = request.META.get("HTTP_X_API_KEY", "").strip()
        return value or None
