"""The auth endpoints: register, login (with its failure limits), refresh, logout and me."""

import base64
import json
import time
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings as django_settings
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import User
from accounts.tests.factories import DEFAULT_PASSWORD, UserFactory
from sparkops.testing import client_for

REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
ME = "/api/v1/auth/me"
NEW_PASSWORD = "a-much-better-password-42"
ERROR_KEYS = {"status", "code", "message", "errors"}

pytestmark = pytest.mark.django_db


def login(client=None, *, email: str, password: str = DEFAULT_PASSWORD, remote_addr: str = "10.0.0.1", **body):
    client = client or client_for()
    return client.post(LOGIN, {"email": email, "password": password, **body}, REMOTE_ADDR=remote_addr)


def tokens_of(user: User, password: str = DEFAULT_PASSWORD) -> dict:
    response = login(email=user.email, password=password)
    assert response.status_code == 200, response.json()
    return response.json()


def bearer(access: str):
    client = client_for()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def refresh(raw: str):
    return client_for().post(REFRESH, {"refresh": raw})


def tamper_signature(token: str) -> str:
    # The middle of the signature: its last character carries padding bits that may decode alike.
    header, payload, signature = token.split(".")
    i = len(signature) // 2
    swapped = "A" if signature[i] != "A" else "B"
    return ".".join([header, payload, signature[:i] + swapped + signature[i + 1 :]])


def with_claims(token: str, **claims) -> str:
    """The token with its payload changed and its original signature kept."""
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(claims)
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return ".".join([header, forged, signature])


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert body["status"] == status
    if code is not None:
        assert body["code"] == code
    return body


def jti_of(raw_refresh: str) -> str:
    return RefreshToken(raw_refresh, verify=False)["jti"]


# ------------------------------------------------------------------------------
# Register
# ------------------------------------------------------------------------------
def test_it_registers_a_user_under_a_lower_cased_email():
    response = client_for().post(REGISTER, {"email": " Ada@Example.COM ", "password": NEW_PASSWORD, "name": "Ada"})

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["email"] == "ada@example.com"
    assert "password" not in body
    user = User.objects.get()
    assert (user.email, user.name, user.is_staff, user.is_superuser) == ("ada@example.com", "Ada", False, False)
    assert user.check_password(NEW_PASSWORD)
    assert body["id"] == user.pk


def test_the_registration_throttle_keys_on_the_client_address(settings):
    settings.SPARKOPS_TRUSTED_PROXIES = ["10.9.0.0/16"]
    limit = int(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["register"].split("/")[0])

    def register(remote_addr: str, forwarded_for: str):
        # An empty body: the throttle answers before validation, so no account is made.
        return client_for().post(REGISTER, {}, REMOTE_ADDR=remote_addr, HTTP_X_FORWARDED_FOR=forwarded_for)

    # Directly from the internet: a made-up X-Forwarded-For per request buys no extra tries.
    statuses = [register("192.0.2.1", f"203.0.113.{n % 250}").status_code for n in range(limit + 1)]
    assert statuses[:limit] == [400] * limit
    assert statuses[limit] == 429
    # Behind the trusted proxy each client has its own allowance.
    for _ in range(limit):
        register("10.9.0.2", "198.51.100.1")
    assert register("10.9.0.2", "198.51.100.1").status_code == 429
    assert register("10.9.0.2", "198.51.100.2").status_code == 400


def test_a_registered_user_can_log_in_in_any_case_of_their_email():
    client_for().post(REGISTER, {"email": "ada@example.com", "password": NEW_PASSWORD})

    response = login(email="ADA@example.com", password=NEW_PASSWORD)

    assert response.status_code == 200, response.json()
    assert response.json()["user"]["email"] == "ada@example.com"


@pytest.mark.parametrize("email", ["ada@example.com", "ADA@example.com", "Ada@Example.Com"])
def test_it_refuses_to_register_an_email_that_exists_in_any_case(email):
    UserFactory(email="ada@example.com")

    response = client_for().post(REGISTER, {"email": email, "password": NEW_PASSWORD})

    body = assert_error(response, 400, "invalid")
    assert body["errors"]["email"] == ["A user with this email already exists."]
    assert User.objects.count() == 1


@pytest.mark.parametrize(
    "password",
    [
        "k9!x",  # too short
        "password",  # common
        "4815162342108",  # entirely numeric
        "ada.lovelace.example",  # too like the email
    ],
)
def test_it_refuses_a_weak_password(password):
    response = client_for().post(REGISTER, {"email": "ada.lovelace@example.com", "password": password})

    body = assert_error(response, 400, "invalid")
    assert body["errors"]
    assert not User.objects.exists()


def test_it_refuses_an_invalid_email():
    response = client_for().post(REGISTER, {"email": "not-an-email", "password": NEW_PASSWORD})

    body = assert_error(response, 400, "invalid")
    assert "email" in body["errors"]
    assert not User.objects.exists()


def test_registration_is_refused_when_closed(settings):
    settings.SPARKOPS_REGISTRATION_OPEN = False

    response = client_for().post(REGISTER, {"email": "ada@example.com", "password": NEW_PASSWORD})

    assert_error(response, 403)
    assert not User.objects.exists()


# ------------------------------------------------------------------------------
# Login
# ------------------------------------------------------------------------------
def test_login_returns_tokens_and_the_user():
    user = UserFactory(email="ada@example.com")

    response = login(email="ada@example.com")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert set(body) == {"access", "refresh", "user"}
    assert body["user"]["id"] == user.pk
    assert body["user"]["email"] == "ada@example.com"
    assert bearer(body["access"]).get(ME).json()["id"] == user.pk
    assert refresh(body["refresh"]).status_code == 200
    user.refresh_from_db()
    assert user.last_login is not None


def test_a_wrong_password_and_an_unknown_email_get_the_same_answer():
    UserFactory(email="ada@example.com")

    wrong_password = login(email="ada@example.com", password="not-the-password")
    unknown_email = login(email="nobody@example.com", password="not-the-password")

    assert wrong_password.status_code == unknown_email.status_code == 401
    assert wrong_password.json() == unknown_email.json()
    assert wrong_password.json() == {
        "status": 401,
        "code": "invalid_credentials",
        "message": "Invalid email or password.",
        "errors": {},
    }
    assert wrong_password.headers["WWW-Authenticate"] == unknown_email.headers["WWW-Authenticate"]


def test_an_inactive_user_cannot_log_in_and_is_told_the_same_as_a_wrong_password():
    UserFactory(email="ada@example.com", is_active=False)

    response = login(email="ada@example.com")

    assert response.status_code == 401
    assert response.json() == login(email="nobody@example.com").json()


def test_login_needs_an_email_and_a_password():
    response = client_for().post(LOGIN, {})

    body = assert_error(response, 400, "invalid")
    assert set(body["errors"]) == {"email", "password"}


def test_an_account_is_locked_after_too_many_failures_even_with_the_right_password(settings):
    settings.SPARKOPS_LOGIN_MAX_FAILURES_PER_ACCOUNT = 3
    UserFactory(email="ada@example.com")
    UserFactory(email="bob@example.com")

    failures = [login(email="ada@example.com", password="guess").status_code for _ in range(3)]
    locked = login(email="ada@example.com")

    assert failures == [401, 401, 401]
    assert_error(locked, 429, "throttled")
    assert "access" not in locked.json()
    assert int(locked.headers["Retry-After"]) == settings.SPARKOPS_LOGIN_LOCKOUT_SECONDS
    # The lock is on the account, not the client: another account logs in from the same address.
    assert login(email="bob@example.com").status_code == 200


def test_an_unknown_email_is_locked_the_same_way_as_a_known_one(settings):
    settings.SPARKOPS_LOGIN_MAX_FAILURES_PER_ACCOUNT = 3
    UserFactory(email="ada@example.com")

    known = [login(email="ada@example.com", password="guess").status_code for _ in range(4)]
    unknown = [login(email="nobody@example.com", password="guess").status_code for _ in range(4)]

    assert known == unknown == [401, 401, 401, 429]


def test_failures_count_against_an_account_whatever_the_case_of_the_email(settings):
    settings.SPARKOPS_LOGIN_MAX_FAILURES_PER_ACCOUNT = 3
    UserFactory(email="ada@example.com")

    for email in ["ADA@example.com", "Ada@Example.com", "ada@EXAMPLE.COM"]:
        assert login(email=email, password="guess").status_code == 401

    assert login(email="ada@example.com").status_code == 429


def test_failures_from_other_clients_add_up_for_an_account(settings):
    settings.SPARKOPS_LOGIN_MAX_FAILURES_PER_ACCOUNT = 3
    UserFactory(email="ada@example.com")

    for n in range(3):
        login(email="ada@example.com", password="guess", remote_addr=f"10.0.1.{n}")

    assert login(email="ada@example.com", remote_addr="10.0.1.99").status_code == 429


def test_a_successful_login_clears_the_accounts_failures(settings):
    settings.SPARKOPS_LOGIN_MAX_FAILURES_PER_ACCOUNT = 3
    UserFactory(email="ada@example.com")

    for _ in range(2):
        for _ in range(2):
            assert login(email="ada@example.com", password="guess").status_code == 401
        assert login(email="ada@example.com").status_code == 200

    assert login(email="ada@example.com", password="guess").status_code == 401


def test_a_client_is_locked_after_too_many_failures_across_emails(settings):
    settings.SPARKOPS_LOGIN_MAX_FAILURES_PER_ACCOUNT = 100
    settings.SPARKOPS_LOGIN_MAX_FAILURES_PER_CLIENT = 3
    UserFactory(email="ada@example.com")

    failures = [login(email=f"guess{n}@example.com", password="guess").status_code for n in range(3)]

    assert failures == [401, 401, 401]
    assert_error(login(email="ada@example.com"), 429, "throttled")
    # Only that client is locked out.
    assert login(email="ada@example.com", remote_addr="10.0.0.2").status_code == 200


def test_behind_a_trusted_proxy_the_client_lockout_keys_on_the_forwarded_address(settings):
    settings.SPARKOPS_TRUSTED_PROXIES = ["10.9.0.0/16"]
    settings.SPARKOPS_LOGIN_MAX_FAILURES_PER_ACCOUNT = 100
    settings.SPARKOPS_LOGIN_MAX_FAILURES_PER_CLIENT = 3
    UserFactory(email="ada@example.com")

    def via_proxy(email, password=DEFAULT_PASSWORD, forwarded_for="203.0.113.7"):
        return client_for().post(
            LOGIN, {"email": email, "password": password}, REMOTE_ADDR="10.9.0.2", HTTP_X_FORWARDED_FOR=forwarded_for
        )

    for n in range(3):
        # A spoofed first hop changes nothing: the proxy appended the address it saw.
        assert via_proxy(f"guess{n}@example.com", "guess", f"198.51.100.{n}, 203.0.113.7").status_code == 401

    assert_error(via_proxy("ada@example.com"), 429, "throttled")
    # Everyone else behind the same proxy still logs in.
    assert via_proxy("ada@example.com", forwarded_for="203.0.113.8").status_code == 200


def test_x_forwarded_for_is_ignored_from_an_untrusted_address(settings):
    settings.SPARKOPS_TRUSTED_PROXIES = ["10.9.0.0/16"]
    settings.SPARKOPS_LOGIN_MAX_FAILURES_PER_ACCOUNT = 100
    settings.SPARKOPS_LOGIN_MAX_FAILURES_PER_CLIENT = 3
    UserFactory(email="ada@example.com")
    for n in range(3):
        response = client_for().post(
            LOGIN,
            {"email": f"guess{n}@example.com", "password": "guess"},
            REMOTE_ADDR="192.0.2.1",
            HTTP_X_FORWARDED_FOR=f"203.0.113.{n}",
        )
        assert response.status_code == 401
    # Rotating the header did not spread the failures: the address itself is locked.
    assert login(email="ada@example.com", remote_addr="192.0.2.1").status_code == 429


def test_a_lock_lifts_once_the_lockout_window_has_passed(settings):
    # Real waiting: the Redis cache expires keys on its own clock, which time-machine cannot move.
    settings.SPARKOPS_LOGIN_LOCKOUT_SECONDS = 1
    settings.SPARKOPS_LOGIN_MAX_FAILURES_PER_ACCOUNT = 2
    UserFactory(email="ada@example.com")
    for _ in range(2):
        login(email="ada@example.com", password="guess")
    assert login(email="ada@example.com").status_code == 429

    time.sleep(1.2)

    assert login(email="ada@example.com").status_code == 200


def test_login_with_use_cookie_sets_a_secure_http_only_refresh_cookie_instead_of_returning_it():
    UserFactory(email="ada@example.com")

    response = login(email="ada@example.com", use_cookie=True)

    assert response.status_code == 200, response.json()
    assert "refresh" not in response.json()
    assert response.json()["access"]
    cookie = response.cookies[django_settings.SPARKOPS_REFRESH_COOKIE_NAME]
    assert cookie["httponly"] is True
    assert cookie["secure"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == django_settings.SPARKOPS_REFRESH_COOKIE_PATH
    assert cookie["max-age"] == int(django_settings.SIMPLE_JWT["REFRESH_TOKEN_LIFETIME"].total_seconds())
    assert refresh(cookie.value).status_code == 200


def test_login_without_use_cookie_sets_no_cookie():
    UserFactory(email="ada@example.com")

    response = login(email="ada@example.com")

    assert django_settings.SPARKOPS_REFRESH_COOKIE_NAME not in response.cookies


# ------------------------------------------------------------------------------
# Refresh
# ------------------------------------------------------------------------------
def test_refresh_rotates_the_refresh_token():
    user = UserFactory()
    old = tokens_of(user)["refresh"]

    response = refresh(old)

    assert response.status_code == 200, response.json()
    new = response.json()
    assert set(new) == {"access", "refresh"}
    assert new["refresh"] != old
    assert bearer(new["access"]).get(ME).json()["id"] == user.pk
    assert BlacklistedToken.objects.filter(token__jti=jti_of(old)).exists()
    assert not BlacklistedToken.objects.filter(token__jti=jti_of(new["refresh"])).exists()
    assert refresh(new["refresh"]).status_code == 200


@pytest.mark.parametrize("path", [REFRESH, LOGOUT])
def test_a_missing_refresh_token_is_a_field_error_list_like_every_other(path):
    response = client_for().post(path, {}, format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == {"refresh": ["Send a refresh token in the body or the refresh cookie."]}


def test_it_refuses_a_reused_refresh_token():
    old = tokens_of(UserFactory())["refresh"]
    assert refresh(old).status_code == 200

    response = refresh(old)

    body = assert_error(response, 401, "token_not_valid")
    assert "refresh" not in body
    assert response.headers["WWW-Authenticate"]


def test_it_refuses_a_refresh_token_with_a_tampered_signature():
    raw = tokens_of(UserFactory())["refresh"]

    assert_error(refresh(tamper_signature(raw)), 401, "token_not_valid")
    assert not BlacklistedToken.objects.exists()


def test_it_refuses_a_refresh_token_whose_payload_was_changed():
    ada, bob = UserFactory(), UserFactory()
    raw = tokens_of(ada)["refresh"]

    assert_error(refresh(with_claims(raw, user_id=str(bob.pk))), 401, "token_not_valid")


def test_it_refuses_an_expired_refresh_token():
    raw = tokens_of(UserFactory())["refresh"]
    lifetime = django_settings.SIMPLE_JWT["REFRESH_TOKEN_LIFETIME"]

    with time_machine.travel(timezone.now() + lifetime + timedelta(minutes=1), tick=False):
        response = refresh(raw)

    assert_error(response, 401, "token_not_valid")


def test_it_refuses_an_access_token_as_a_refresh_token():
    access = tokens_of(UserFactory())["access"]

    assert_error(refresh(access), 401, "token_not_valid")


def test_it_refuses_a_refresh_token_of_a_deactivated_user():
    user = UserFactory()
    raw = tokens_of(user)["refresh"]
    User.objects.filter(pk=user.pk).update(is_active=False)

    assert_error(refresh(raw), 401, "token_not_valid")


def test_it_refuses_a_signed_refresh_token_it_has_no_record_of():
    user = UserFactory()
    unrecorded = RefreshToken()  # signed with our key, but never handed out by a login
    unrecorded["user_id"] = str(user.pk)
    unrecorded["tv"] = user.token_version

    assert_error(refresh(str(unrecorded)), 401, "token_not_valid")


def test_refresh_reads_the_token_from_the_cookie_and_sets_a_new_cookie():
    UserFactory(email="ada@example.com")
    client = client_for()
    login(client, email="ada@example.com", use_cookie=True)
    name = django_settings.SPARKOPS_REFRESH_COOKIE_NAME
    old = client.cookies[name].value

    response = client.post(REFRESH, {})

    assert response.status_code == 200, response.json()
    assert "refresh" not in response.json()
    cookie = response.cookies[name]
    assert cookie.value
    assert cookie.value != old
    assert cookie["httponly"] is True
    assert cookie["secure"] is True
    assert cookie["samesite"] == "Lax"
    assert refresh(old).status_code == 401
    assert client.post(REFRESH, {}).status_code == 200  # the client now holds the new cookie


def test_refresh_with_use_cookie_moves_the_new_token_into_a_cookie():
    raw = tokens_of(UserFactory())["refresh"]

    response = client_for().post(REFRESH, {"refresh": raw, "use_cookie": True})

    assert response.status_code == 200, response.json()
    assert "refresh" not in response.json()
    assert response.cookies[django_settings.SPARKOPS_REFRESH_COOKIE_NAME].value


def test_refresh_asks_for_a_token_when_none_is_sent():
    body = assert_error(client_for().post(REFRESH, {}), 400, "invalid")

    assert "refresh" in body["errors"]


# ------------------------------------------------------------------------------
# Logout
# ------------------------------------------------------------------------------
def test_logout_revokes_the_refresh_token():
    raw = tokens_of(UserFactory())["refresh"]

    response = client_for().post(LOGOUT, {"refresh": raw})

    assert response.status_code == 204
    assert BlacklistedToken.objects.filter(token__jti=jti_of(raw)).exists()
    assert_error(refresh(raw), 401, "token_not_valid")


def test_logout_revokes_the_cookie_token_and_clears_the_cookie():
    UserFactory(email="ada@example.com")
    client = client_for()
    login(client, email="ada@example.com", use_cookie=True)
    name = django_settings.SPARKOPS_REFRESH_COOKIE_NAME
    raw = client.cookies[name].value

    response = client.post(LOGOUT, {})

    assert response.status_code == 204
    cookie = response.cookies[name]
    assert cookie.value == ""
    assert cookie["max-age"] == 0
    assert cookie["path"] == django_settings.SPARKOPS_REFRESH_COOKIE_PATH
    assert refresh(raw).status_code == 401


def test_logout_refuses_an_invalid_token():
    raw = tokens_of(UserFactory())["refresh"]

    assert_error(client_for().post(LOGOUT, {"refresh": tamper_signature(raw)}), 401, "token_not_valid")
    assert not BlacklistedToken.objects.exists()


def test_logout_asks_for_a_token_when_none_is_sent():
    body = assert_error(client_for().post(LOGOUT, {}), 400, "invalid")

    assert "refresh" in body["errors"]


# ------------------------------------------------------------------------------
# Me
# ------------------------------------------------------------------------------
def test_me_needs_credentials():
    response = client_for().get(ME)

    body = assert_error(response, 401, "not_authenticated")
    assert body["errors"] == {}
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_me_returns_the_caller():
    user = UserFactory(email="ada@example.com", name="Ada")

    response = client_for(user).get(ME)

    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["email"], body["name"], body["is_staff"]) == (user.pk, "ada@example.com", "Ada", False)
    assert "password" not in body
    assert "token_version" not in body


def test_me_refuses_a_tampered_access_token():
    access = tokens_of(UserFactory())["access"]

    assert_error(bearer(tamper_signature(access)).get(ME), 401)


def test_me_refuses_an_access_token_naming_another_user():
    ada, bob = UserFactory(), UserFactory()
    access = tokens_of(ada)["access"]

    assert_error(bearer(with_claims(access, user_id=str(bob.pk))).get(ME), 401)


def test_me_refuses_an_expired_access_token():
    access = tokens_of(UserFactory())["access"]
    lifetime = django_settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"]

    with time_machine.travel(timezone.now() + lifetime + timedelta(minutes=1), tick=False):
        response = bearer(access).get(ME)

    assert_error(response, 401)


def test_me_refuses_a_refresh_token_as_an_access_token():
    raw = tokens_of(UserFactory())["refresh"]

    assert_error(bearer(raw).get(ME), 401)


def test_an_invalid_access_token_is_reported_as_a_token_error_not_as_a_field_error():
    access = tokens_of(UserFactory())["access"]

    body = assert_error(bearer(tamper_signature(access)).get(ME), 401)

    assert body["code"] == "token_not_valid"
    assert body["errors"] == {}


def test_me_patch_changes_the_name():
    user = UserFactory(name="Ada")

    response = client_for(user).patch(ME, {"name": "Ada Lovelace"})

    assert response.status_code == 200, response.json()
    assert response.json()["user"]["name"] == "Ada Lovelace"
    assert "access" not in response.json()
    user.refresh_from_db()
    assert user.name == "Ada Lovelace"


@pytest.mark.parametrize(
    "body",
    [
        {"new_password": NEW_PASSWORD},
        {"new_password": NEW_PASSWORD, "current_password": "not-the-password"},
    ],
    ids=["missing", "wrong"],
)
def test_a_password_change_needs_the_current_password(body):
    user = UserFactory()

    response = client_for(user).patch(ME, body)

    assert "current_password" in assert_error(response, 400, "invalid")["errors"]
    user.refresh_from_db()
    assert user.check_password(DEFAULT_PASSWORD)
    assert user.token_version == 0


def test_a_password_change_refuses_a_weak_new_password():
    user = UserFactory()

    response = client_for(user).patch(ME, {"current_password": DEFAULT_PASSWORD, "new_password": "password"})

    assert_error(response, 400, "invalid")
    user.refresh_from_db()
    assert user.check_password(DEFAULT_PASSWORD)


def test_a_refused_password_change_does_not_change_the_name_either():
    user = UserFactory(name="Ada")

    response = client_for(user).patch(
        ME, {"name": "Eve", "current_password": "not-the-password", "new_password": NEW_PASSWORD}
    )

    assert response.status_code == 400
    user.refresh_from_db()
    assert user.name == "Ada"


def test_a_password_change_revokes_every_earlier_token_and_returns_working_ones():
    user = UserFactory(email="ada@example.com")
    laptop, phone = tokens_of(user), tokens_of(user)

    response = bearer(laptop["access"]).patch(ME, {"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD})

    assert response.status_code == 200, response.json()
    fresh = response.json()
    assert {"user", "access", "refresh"} <= set(fresh)
    for old in (laptop, phone):
        assert_error(bearer(old["access"]).get(ME), 401)
        assert_error(refresh(old["refresh"]), 401)
    assert bearer(fresh["access"]).get(ME).status_code == 200
    assert refresh(fresh["refresh"]).status_code == 200
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)
    assert login(email="ada@example.com").status_code == 401
    assert login(email="ada@example.com", password=NEW_PASSWORD).status_code == 200


# ------------------------------------------------------------------------------
# Paths
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("slash", ["", "/"], ids=["bare", "slash"])
def test_every_auth_path_answers_with_and_without_a_trailing_slash(slash):
    UserFactory(email="ada@example.com")
    client = client_for()

    registered = client.post(REGISTER + slash, {"email": "bob@example.com", "password": NEW_PASSWORD})
    logged_in = client.post(LOGIN + slash, {"email": "ada@example.com", "password": DEFAULT_PASSWORD})
    tokens = logged_in.json()
    refreshed = client.post(REFRESH + slash, {"refresh": tokens["refresh"]})
    me = bearer(tokens["access"]).get(ME + slash)
    logged_out = client.post(LOGOUT + slash, {"refresh": refreshed.json()["refresh"]})

    assert [r.status_code for r in (registered, logged_in, refreshed, me, logged_out)] == [201, 200, 200, 200, 204]
