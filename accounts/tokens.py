"""JWT minting. Every token carries the user's token version so a password change revokes
all tokens issued before it, access tokens included."""

from rest_framework_simplejwt.tokens import RefreshToken

TOKEN_VERSION_CLAIM = "tv"  # noqa: S105 - a claim name, not a secret


def tokens_for_user(user) -> dict[str, str]:
    refresh = RefreshToken.for_user(user)
    refresh[TOKEN_VERSION_CLAIM] = user.token_version
    return {"access": str(refresh.access_token), "refresh": str(refresh)}
