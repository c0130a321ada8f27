"""Account services and the model rules they lean on."""

import threading
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth import authenticate
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts import services
from accounts.models import ApiKey, User, digest_api_key
from accounts.tests.factories import DEFAULT_PASSWORD, ApiKeyFactory, UserFactory, expired
from accounts.tokens import TOKEN_VERSION_CLAIM, tokens_for_user
from projects.tests.factories import ProjectFactory
from sparkops.roles import Role

NEW_PASSWORD = "a-much-better-password-42"

pytestmark = pytest.mark.django_db


# ------------------------------------------------------------------------------
# Users
# ------------------------------------------------------------------------------
def test_user_create_normalizes_the_email_and_hashes_the_password():
    user = services.user_create(email="  Ada@Example.COM ", password=NEW_PASSWORD, name="Ada")

    user.refresh_from_db()
    assert user.email == "ada@example.com"
    assert user.password != NEW_PASSWORD
    assert user.check_password(NEW_PASSWORD)
    assert (user.is_staff, user.is_superuser, user.is_active) == (False, False, True)


def test_user_create_refuses_an_email_taken_in_another_case():
    UserFactory(email="ada@example.com")

    with pytest.raises(ValidationError) as error:
        services.user_create(email="ADA@example.com", password=NEW_PASSWORD)

    assert "email" in error.value.message_dict
    assert User.objects.count() == 1


def test_user_create_refuses_a_weak_password():
    with pytest.raises(ValidationError):
        services.user_create(email="ada@example.com", password="password")

    assert not User.objects.exists()


def test_the_database_refuses_two_emails_differing_only_in_case():
    UserFactory(email="ada@example.com")

    # objects.create() skips clean(), so only the constraint stands in the way.
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.create(email="Ada@Example.com")


def test_create_user_and_create_superuser_normalize_the_email():
    user = User.objects.create_user("Ada@Example.com", NEW_PASSWORD)
    root = User.objects.create_superuser("Root@Example.com", NEW_PASSWORD)

    assert (user.email, user.is_staff, user.is_superuser) == ("ada@example.com", False, False)
    assert (root.email, root.is_staff, root.is_superuser) == ("root@example.com", True, True)


def test_create_user_needs_an_email():
    with pytest.raises(ValueError, match="email"):
        User.objects.create_user("", NEW_PASSWORD)


def test_authenticate_finds_a_user_whatever_the_case_of_the_email():
    user = UserFactory(email="ada@example.com")

    assert authenticate(None, email="ADA@Example.com", password=DEFAULT_PASSWORD) == user


def test_full_clean_normalizes_the_email():
    user = User(email="Ada@Example.COM")
    user.set_unusable_password()

    user.full_clean()

    assert user.email == "ada@example.com"


def test_user_update_changes_the_name():
    user = UserFactory(name="Ada")

    services.user_update(user=user, name="Ada Lovelace")

    user.refresh_from_db()
    assert user.name == "Ada Lovelace"


def test_user_change_password_refuses_a_wrong_current_password():
    user = UserFactory()

    with pytest.raises(ValidationError) as error:
        services.user_change_password(user=user, current_password="nope", new_password=NEW_PASSWORD)

    assert "current_password" in error.value.message_dict
    user.refresh_from_db()
    assert user.check_password(DEFAULT_PASSWORD)
    assert user.token_version == 0


def test_user_change_password_bumps_the_token_version_and_revokes_every_refresh_token():
    user = UserFactory()
    old = [tokens_for_user(user)["refresh"] for _ in range(3)]

    fresh = services.user_change_password(user=user, current_password=DEFAULT_PASSWORD, new_password=NEW_PASSWORD)

    user.refresh_from_db()
    assert user.token_version == 1
    assert user.check_password(NEW_PASSWORD)
    old_jtis = [RefreshToken(raw, verify=False)["jti"] for raw in old]
    assert BlacklistedToken.objects.filter(token__jti__in=old_jtis).count() == 3
    assert RefreshToken(fresh["refresh"])[TOKEN_VERSION_CLAIM] == 1
    assert AccessToken(fresh["access"])[TOKEN_VERSION_CLAIM] == 1
    for raw in old:
        with pytest.raises(services.TokenRevoked):
            services.token_rotate(raw_refresh=raw)


def test_tokens_carry_the_users_token_version():
    user = UserFactory()
    User.objects.filter(pk=user.pk).update(token_version=7)
    user.refresh_from_db()

    tokens = tokens_for_user(user)

    assert RefreshToken(tokens["refresh"])[TOKEN_VERSION_CLAIM] == 7
    assert AccessToken(tokens["access"])[TOKEN_VERSION_CLAIM] == 7


# ------------------------------------------------------------------------------
# Login
# ------------------------------------------------------------------------------
def test_user_login_returns_the_user_and_tokens_and_records_the_login():
    user = UserFactory(email="ada@example.com")

    found, tokens = services.user_login(request=None, email="Ada@example.com", password=DEFAULT_PASSWORD, client="c")

    assert found == user
    assert AccessToken(tokens["access"])["user_id"] == str(user.pk)
    assert OutstandingToken.objects.filter(user=user).count() == 1
    user.refresh_from_db()
    assert user.last_login is not None


@pytest.mark.parametrize(
    ("email", "password", "active"),
    [
        ("ada@example.com", "wrong", True),
        ("nobody@example.com", DEFAULT_PASSWORD, True),
        ("ada@example.com", DEFAULT_PASSWORD, False),
    ],
    ids=["wrong-password", "unknown-email", "inactive"],
)
def test_user_login_raises_invalid_credentials(email, password, active):
    UserFactory(email="ada@example.com", is_active=active)

    with pytest.raises(services.InvalidCredentials):
        services.user_login(request=None, email=email, password=password, client="c")

    assert not OutstandingToken.objects.exists()


def test_user_login_locks_after_the_account_limit(settings):
    settings.SPARKOPS_LOGIN_MAX_FAILURES_PER_ACCOUNT = 2
    UserFactory(email="ada@example.com")
    for _ in range(2):
        with pytest.raises(services.InvalidCredentials):
            services.user_login(request=None, email="ada@example.com", password="wrong", client="c")

    assert services.login_is_locked(email="ADA@example.com", client="other")
    with pytest.raises(services.LoginLocked):
        services.user_login(request=None, email="ada@example.com", password=DEFAULT_PASSWORD, client="c")


def test_user_login_locks_a_client_after_the_client_limit(settings):
    settings.SPARKOPS_LOGIN_MAX_FAILURES_PER_CLIENT = 2
    for n in range(2):
        with pytest.raises(services.InvalidCredentials):
            services.user_login(request=None, email=f"guess{n}@example.com", password="wrong", client="c")

    assert services.login_is_locked(email="fresh@example.com", client="c")
    assert not services.login_is_locked(email="fresh@example.com", client="d")


def test_nothing_is_locked_before_any_failure():
    assert not services.login_is_locked(email="ada@example.com", client="c")


# ------------------------------------------------------------------------------
# Tokens
# ------------------------------------------------------------------------------
def test_token_rotate_returns_a_new_pair_and_blacklists_the_old_refresh_token():
    user = UserFactory()
    old = tokens_for_user(user)["refresh"]

    new = services.token_rotate(raw_refresh=old)

    assert new["refresh"] != old
    assert RefreshToken(new["refresh"])["user_id"] == str(user.pk)
    assert BlacklistedToken.objects.filter(token__jti=RefreshToken(old, verify=False)["jti"]).exists()
    with pytest.raises(services.TokenRevoked):
        services.token_rotate(raw_refresh=old)


@pytest.mark.django_db(transaction=True)
def test_token_rotate_lets_only_one_of_two_concurrent_refreshes_win():
    if connection.vendor != "postgresql":
        # SQLite's IMMEDIATE transactions run the two rotations one after the other: no race.
        pytest.skip("needs concurrent writers (PostgreSQL)")
    user = UserFactory()
    raw = tokens_for_user(user)["refresh"]
    outstanding = OutstandingToken.objects.get(user=user)
    inserted, done = threading.Event(), threading.Event()

    def rival_rotation():
        # Blacklists the token in a transaction left open for a moment: the rotation below
        # passes the blacklist check (it cannot see the row yet) and then waits on the insert.
        try:
            with transaction.atomic():
                BlacklistedToken.objects.create(token=outstanding)
                inserted.set()
                done.wait(0.5)
        finally:
            connection.close()

    rival = threading.Thread(target=rival_rotation)
    rival.start()
    assert inserted.wait(5)
    try:
        with pytest.raises(services.TokenRevoked):
            services.token_rotate(raw_refresh=raw)
    finally:
        done.set()
        rival.join()
    assert OutstandingToken.objects.filter(user=user).count() == 1  # no new pair was minted


def test_token_rotate_refuses_a_token_from_before_a_password_change():
    user = UserFactory()
    old = tokens_for_user(user)["refresh"]
    # Bumped without the blacklisting, so the version check alone must refuse it.
    User.objects.filter(pk=user.pk).update(token_version=1)

    with pytest.raises(services.TokenRevoked):
        services.token_rotate(raw_refresh=old)


def test_token_rotate_refuses_a_token_of_a_deleted_user():
    user = UserFactory()
    raw = tokens_for_user(user)["refresh"]
    user.delete()

    with pytest.raises(services.TokenRevoked):
        services.token_rotate(raw_refresh=raw)


def test_token_revoke_blacklists_the_refresh_token():
    raw = tokens_for_user(UserFactory())["refresh"]

    services.token_revoke(raw_refresh=raw)

    assert BlacklistedToken.objects.filter(token__jti=RefreshToken(raw, verify=False)["jti"]).exists()
    with pytest.raises(services.TokenRevoked):
        services.token_revoke(raw_refresh=raw)


def test_token_revoke_refuses_garbage():
    with pytest.raises(services.TokenRevoked):
        services.token_revoke(raw_refresh="not-a-token")


# ------------------------------------------------------------------------------
# API keys
# ------------------------------------------------------------------------------
def test_api_key_create_returns_the_full_key_and_stores_only_its_digest():
    user, project = UserFactory(), ProjectFactory()

    key, raw = services.api_key_create(
        user=user, creator_role=Role.ADMIN, project=project, name="ci", role=Role.DEVELOPER
    )

    key.refresh_from_db()
    tag, prefix, secret = raw.split("_", 2)
    assert (tag, prefix) == ("spk", key.prefix)
    assert len(secret) >= 43  # 32 random bytes
    assert key.digest == digest_api_key(raw) != raw
    assert (key.created_by, key.project, key.role, key.revoked_at) == (user, project, Role.DEVELOPER, None)
    assert services.api_key_authenticate(raw=raw) == key


def test_api_key_create_refuses_a_non_member():
    with pytest.raises(PermissionDenied):
        services.api_key_create(
            user=UserFactory(), creator_role=None, project=ProjectFactory(), name="ci", role=Role.VIEWER
        )

    assert not ApiKey.objects.exists()


def test_api_key_create_refuses_a_role_above_the_creators():
    with pytest.raises(ValidationError) as error:
        services.api_key_create(
            user=UserFactory(), creator_role=Role.DEVELOPER, project=ProjectFactory(), name="ci", role=Role.ADMIN
        )

    assert "role" in error.value.message_dict
    assert not ApiKey.objects.exists()


def test_api_key_create_refuses_an_expiry_in_the_past():
    with pytest.raises(ValidationError) as error:
        services.api_key_create(
            user=UserFactory(),
            creator_role=Role.OWNER,
            project=ProjectFactory(),
            name="ci",
            role=Role.VIEWER,
            expires_at=expired(),
        )

    assert "expires_at" in error.value.message_dict


def test_every_key_gets_its_own_prefix_and_secret():
    generated = [ApiKey.generate() for _ in range(50)]

    assert len({raw for raw, _, _ in generated}) == 50
    assert len({prefix for _, prefix, _ in generated}) == 50


def test_the_database_refuses_an_unknown_role():
    key = ApiKeyFactory()

    with pytest.raises(IntegrityError), transaction.atomic():
        ApiKey.objects.filter(pk=key.pk).update(role="root")


def test_api_key_revoke_keeps_the_first_revocation_time():
    key = ApiKeyFactory()
    services.api_key_revoke(key=key)
    first = key.revoked_at

    with time_machine.travel(timezone.now() + timedelta(hours=1)):
        services.api_key_revoke(key=key)

    key.refresh_from_db()
    assert first is not None
    assert key.revoked_at == first


def test_api_key_authenticate_returns_an_active_key():
    key = ApiKeyFactory()

    assert services.api_key_authenticate(raw=key.raw) == key


@pytest.mark.parametrize(
    "fields",
    [{"revoked_at": timezone.now()}, {"expires_at": timezone.now() - timedelta(seconds=1)}],
    ids=["revoked", "expired"],
)
def test_api_key_authenticate_refuses_an_inactive_key(fields):
    key = ApiKeyFactory(**fields)

    assert services.api_key_authenticate(raw=key.raw) is None
    key.refresh_from_db()
    assert key.last_used_at is None


def test_api_key_authenticate_refuses_a_key_of_an_inactive_creator():
    key = ApiKeyFactory(created_by=UserFactory(is_active=False))

    assert services.api_key_authenticate(raw=key.raw) is None


@pytest.mark.parametrize("raw", ["", "spk", "spk_", "spk_abc", "spk__secret", "xyz_abc_secret", "Bearer x"])
def test_api_key_authenticate_refuses_malformed_keys(raw):
    ApiKeyFactory()

    assert services.api_key_authenticate(raw=raw) is None


def test_api_key_authenticate_refuses_another_keys_secret_under_a_known_prefix():
    key, other = ApiKeyFactory(), ApiKeyFactory()
    forged = f"spk_{key.prefix}_{other.raw.split('_', 2)[2]}"

    assert services.api_key_authenticate(raw=forged) is None


def test_api_key_authenticate_touches_last_used_at_at_most_once_a_minute():
    key = ApiKeyFactory()
    start = timezone.now()

    with time_machine.travel(start, tick=False):
        services.api_key_authenticate(raw=key.raw)
    with time_machine.travel(start + services.API_KEY_TOUCH_INTERVAL - timedelta(seconds=1), tick=False):
        services.api_key_authenticate(raw=key.raw)
    key.refresh_from_db()
    assert key.last_used_at == start

    later = start + services.API_KEY_TOUCH_INTERVAL + timedelta(seconds=1)
    with time_machine.travel(later, tick=False):
        services.api_key_authenticate(raw=key.raw)
    key.refresh_from_db()
    assert key.last_used_at == later


def test_a_key_is_active_until_revoked_or_expired():
    now = timezone.now()

    assert ApiKey(expires_at=None).is_active
    assert ApiKey(expires_at=now + timedelta(minutes=1)).is_active
    assert not ApiKey(expires_at=now - timedelta(minutes=1)).is_active
    assert not ApiKey(revoked_at=now).is_active
