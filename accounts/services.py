"""Account services: registration, profile, passwords, tokens, login throttling and API keys."""

import hashlib
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import authenticate, password_validation
from django.contrib.auth.models import update_last_login
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from audit.choices import Action
from audit.services import audit_record
from sparkops.lib.errors import NotAuthenticated, TooManyRequests
from sparkops.roles import Role

from .models import ApiKey, User, UserManager
from .tokens import TOKEN_VERSION_CLAIM, tokens_for_user

# last_used_at is written at most this often per key, not on every request.
API_KEY_TOUCH_INTERVAL = timedelta(seconds=60)


class LoginLocked(TooManyRequests):
    """Too many failed logins for this account or client; refused until the window passes (429)."""

    def __init__(self):
        wait = settings.SPARKOPS_LOGIN_LOCKOUT_SECONDS
        super().__init__(
            f"Too many failed logins. Try again later. Expected available in {wait} seconds.", retry_after=wait
        )


class InvalidCredentials(NotAuthenticated):
    """Unknown email, wrong password or inactive account: one answer for all three (401)."""

    code = "invalid_credentials"
    default_message = "Invalid email or password."


class TokenRevoked(NotAuthenticated):
    """A refresh token that was rotated, logged out, or minted before a password change (401)."""

    code = "token_not_valid"
    default_message = "Refresh token is invalid, expired or already used."


# ------------------------------------------------------------------------------
# Users
# ------------------------------------------------------------------------------
def user_create(*, email: str, password: str, name: str = "") -> User:
    user = User(email=UserManager.normalize_email(email), name=name)
    password_validation.validate_password(password, user)
    user.set_password(password)
    user.full_clean()
    try:
        user.save()
    except IntegrityError as exc:  # two registrations of one email at once
        raise ValidationError({"email": "A user with this email already exists."}) from exc
    return user


def user_update(*, user: User, name: str) -> User:
    user.name = name
    user.full_clean()
    user.save(update_fields=["name"])
    return user


@transaction.atomic
def user_change_password(*, user: User, current_password: str, new_password: str) -> dict[str, str]:
    """Set a new password, revoke every token issued before it, and return fresh tokens."""
    if not user.check_password(current_password):
        raise ValidationError({"current_password": "The current password is not correct."})
    password_validation.validate_password(new_password, user)
    user.set_password(new_password)
    user.token_version = F("token_version") + 1
    user.save(update_fields=["password", "token_version"])
    user.refresh_from_db(fields=["token_version"])
    _blacklist_all_refresh_tokens(user)
    return tokens_for_user(user)


def _blacklist_all_refresh_tokens(user: User) -> None:
    outstanding = OutstandingToken.objects.filter(
        user=user, blacklistedtoken__isnull=True, expires_at__gt=timezone.now()
    )
    BlacklistedToken.objects.bulk_create([BlacklistedToken(token=t) for t in outstanding], ignore_conflicts=True)


# ------------------------------------------------------------------------------
# Login and tokens
# ------------------------------------------------------------------------------
def _failure_keys(email: str, client: str) -> tuple[str, str]:
    # Keyed on the email as typed (normalized), so unknown and known emails lock alike.
    account = hashlib.sha256(UserManager.normalize_email(email).encode()).hexdigest()
    return f"login-failures:account:{account}", f"login-failures:client:{client}"


def login_is_locked(*, email: str, client: str) -> bool:
    account_key, client_key = _failure_keys(email, client)
    counts = cache.get_many([account_key, client_key])
    return (
        counts.get(account_key, 0) >= settings.SPARKOPS_LOGIN_MAX_FAILURES_PER_ACCOUNT
        or counts.get(client_key, 0) >= settings.SPARKOPS_LOGIN_MAX_FAILURES_PER_CLIENT
    )


def _login_record_failure(*, email: str, client: str) -> None:
    for key in _failure_keys(email, client):
        # add() starts the window with the first failure; incr() is atomic on Redis.
        cache.add(key, 0, timeout=settings.SPARKOPS_LOGIN_LOCKOUT_SECONDS)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, timeout=settings.SPARKOPS_LOGIN_LOCKOUT_SECONDS)


def user_login(*, request, email: str, password: str, client: str) -> tuple[User, dict[str, str]]:
    """Check credentials under the failure limits and mint tokens."""
    if login_is_locked(email=email, client=client):
        raise LoginLocked()
    user = authenticate(request, email=UserManager.normalize_email(email), password=password)
    if user is None:
        _login_record_failure(email=email, client=client)
        raise InvalidCredentials()
    cache.delete(_failure_keys(email, client)[0])
    update_last_login(None, user)
    return user, tokens_for_user(user)


@transaction.atomic
def token_rotate(*, raw_refresh: str) -> dict[str, str]:
    """Exchange a refresh token for a new pair; the old one is blacklisted and refused after."""
    refresh = _valid_refresh(raw_refresh)
    user = User.objects.filter(pk=refresh.get(jwt_settings.USER_ID_CLAIM), is_active=True).first()
    if user is None or refresh.get(TOKEN_VERSION_CLAIM, 0) != user.token_version:
        raise TokenRevoked()
    # Two concurrent refreshes with one token both pass the blacklist check above; only the one
    # that creates the blacklist row may rotate, so a stolen token cannot fork the session.
    outstanding = OutstandingToken.objects.filter(jti=refresh[jwt_settings.JTI_CLAIM]).first()
    if outstanding is None:  # not minted by us
        raise TokenRevoked()
    _, created = BlacklistedToken.objects.get_or_create(token=outstanding)
    if not created:
        raise TokenRevoked()
    return tokens_for_user(user)


def token_revoke(*, raw_refresh: str) -> None:
    refresh = _valid_refresh(raw_refresh)
    refresh.blacklist()


def _valid_refresh(raw_refresh: str) -> RefreshToken:
    try:
        return RefreshToken(raw_refresh)  # signature, expiry, type and blacklist
    except TokenError as exc:
        raise TokenRevoked() from exc


# ------------------------------------------------------------------------------
# API keys
# ------------------------------------------------------------------------------
def api_key_create(
    *, user: User, creator_role: str | None, project, name: str, role: str, expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """Create a key acting for ``user`` in ``project``. Returns the key and its full text,
    which is shown once and never stored."""
    if creator_role is None:
        raise PermissionDenied("You are not a member of this project.")
    if not Role.at_least(creator_role, role):
        raise ValidationError({"role": f"A key's role cannot be higher than yours ({creator_role})."})
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "Expiry must be in the future."})
    raw, prefix, digest = ApiKey.generate()
    key = ApiKey(
        project=project, created_by=user, name=name, role=role, prefix=prefix, digest=digest, expires_at=expires_at
    )
    key.full_clean()
    key.save()
    return key, raw


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    # Conditional so a second revoke keeps the first time.
    with transaction.atomic():
        revoked = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        key.refresh_from_db(fields=["revoked_at"])
        if revoked:
            changes = {"revoked_at": [None, key.revoked_at.isoformat()]}
            audit_record(action=Action.REVOKE, obj=key, project_id=key.project_id, changes=changes)
    return key


def api_key_authenticate(*, raw: str) -> ApiKey | None:
    """The active key ``raw`` names, or None. Compared in constant time."""
    prefix = ApiKey.split(raw)
    if prefix is None:
        return None
    key = ApiKey.objects.select_related("created_by").filter(prefix=prefix).first()
    if key is None or not key.matches(raw) or not key.is_active or not key.created_by.is_active:
        return None
    _api_key_touch(key)
    return key


def _api_key_touch(key: ApiKey) -> None:
    now = timezone.now()
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - API_KEY_TOUCH_INTERVAL)
    if ApiKey.objects.filter(stale, pk=key.pk).update(last_used_at=now):
        key.last_used_at = now
