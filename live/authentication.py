"""``?token=``: a stream token (see tokens.py), accepted by the stream's view and nowhere else."""

from django.core import signing
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions

from accounts.models import ApiKey, User

from .tokens import stream_token_read

BAD_TOKEN = _("Stream token is invalid or expired; get a new one from POST /api/v1/sse/token.")


class StreamTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        raw = request.query_params.get("token")
        if not raw:
            return None
        try:
            grant = stream_token_read(raw)
        except (signing.BadSignature, ValueError, KeyError):
            raise exceptions.AuthenticationFailed(BAD_TOKEN, code="invalid_stream_token") from None
        user = User.objects.filter(pk=grant.user_id, is_active=True).first()
        if user is None or (grant.api_key_id and not _key_active(grant.api_key_id)):
            raise exceptions.AuthenticationFailed(BAD_TOKEN, code="invalid_stream_token")
        return user, grant

    def authenticate_header(self, request) -> str:
        return "Bearer"


def _key_active(key_id: str) -> bool:
    key = ApiKey.objects.filter(pk=key_id).first()
    return key is not None and key.is_active
