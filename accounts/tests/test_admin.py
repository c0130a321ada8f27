"""The Django admin pages for users and API keys."""

import re

import pytest
from django.test import Client

from accounts.models import ApiKey, User, digest_api_key
from accounts.tests.factories import ApiKeyFactory, UserFactory
from projects.tests.factories import MembershipFactory
from sparkops.roles import Role
from sparkops.testing import client_for

USERS = "/admin/accounts/user/"
KEYS = "/admin/accounts/apikey/"
NEW_PASSWORD = "a-much-better-password-42"
RAW_KEY = re.compile(r"spk_[0-9a-f]+_[A-Za-z0-9_-]+")

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client():
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def no_date(prefix: str) -> dict:
    return {f"{prefix}_0": "", f"{prefix}_1": ""}


@pytest.mark.parametrize("path", [USERS, f"{USERS}add/", KEYS, f"{KEYS}add/"])
def test_a_superuser_opens_the_account_pages(admin_client, path):
    UserFactory()
    ApiKeyFactory()

    response = admin_client.get(path)

    assert response.status_code == 200


def test_a_superuser_opens_a_users_and_a_keys_change_page_which_never_shows_the_digest(admin_client):
    key = ApiKeyFactory()

    user_page = admin_client.get(f"{USERS}{key.created_by.pk}/change/")
    key_page = admin_client.get(f"{KEYS}{key.pk}/change/")

    assert user_page.status_code == key_page.status_code == 200
    assert key.prefix in key_page.content.decode()
    assert key.digest not in key_page.content.decode()


@pytest.mark.parametrize("path", [USERS, KEYS])
def test_a_user_without_staff_rights_is_sent_to_the_admin_login(path):
    client = Client()
    client.force_login(UserFactory())

    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_creating_a_key_in_the_admin_shows_the_full_key_once_and_stores_only_its_digest(admin_client):
    membership = MembershipFactory(role=Role.DEVELOPER)
    form = {
        "project": str(membership.project.pk),
        "created_by": str(membership.user.pk),
        "name": "nightly ETL",
        "role": Role.VIEWER,
        **no_date("expires_at"),
    }

    response = admin_client.post(f"{KEYS}add/", form, follow=True)

    assert response.redirect_chain, response.context["adminform"].form.errors
    shown = [str(m) for m in response.context["messages"] if RAW_KEY.search(str(m))]
    assert len(shown) == 1
    raw = RAW_KEY.search(shown[0]).group()
    key = ApiKey.objects.get()
    assert (key.project, key.created_by, key.name) == (membership.project, membership.user, "nightly ETL")
    assert key.role == Role.VIEWER
    assert raw.startswith(f"spk_{key.prefix}_")
    assert key.digest == digest_api_key(raw)
    secret = raw.split("_", 2)[2]
    for column, value in ApiKey.objects.filter(pk=key.pk).values().get().items():
        assert secret not in str(value), column
    # The key works, and no later page shows it again.
    assert client_for(api_key=raw).get("/api/v1/projects").status_code == 200
    for path in (KEYS, f"{KEYS}{key.pk}/change/"):
        assert secret not in admin_client.get(path).content.decode()


def test_a_keys_owner_project_and_role_cannot_be_changed_in_the_admin(admin_client):
    key = ApiKeyFactory(role=Role.VIEWER)
    other = UserFactory()
    before = (key.role, key.created_by_id, key.project_id, key.digest, key.prefix)

    response = admin_client.post(
        f"{KEYS}{key.pk}/change/",
        {"name": "renamed", "role": Role.OWNER, "created_by": str(other.pk), **no_date("expires_at")},
    )

    assert response.status_code == 302
    key.refresh_from_db()
    assert key.name == "renamed"
    assert (key.role, key.created_by_id, key.project_id, key.digest, key.prefix) == before


def test_the_revoke_action_revokes_the_selected_keys(admin_client):
    chosen, spared = ApiKeyFactory(), ApiKeyFactory()

    response = admin_client.post(KEYS, {"action": "revoke", "_selected_action": [str(chosen.pk)]})

    assert response.status_code == 302
    chosen.refresh_from_db()
    spared.refresh_from_db()
    assert chosen.revoked_at is not None
    assert spared.revoked_at is None
    assert client_for(api_key=chosen.raw).get("/api/v1/projects").status_code == 401


def test_creating_a_user_in_the_admin_lower_cases_the_email_and_sets_the_password(admin_client):
    response = admin_client.post(
        f"{USERS}add/",
        {"email": "Ada@Example.COM", "name": "Ada", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    user = User.objects.get(name="Ada")
    assert user.email == "ada@example.com"
    assert user.check_password(NEW_PASSWORD)


def test_the_admin_refuses_a_user_whose_email_exists_in_another_case(admin_client):
    UserFactory(email="ada@example.com")

    response = admin_client.post(
        f"{USERS}add/",
        {"email": "ADA@example.com", "name": "Ada", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert User.objects.filter(email__iexact="ada@example.com").count() == 1


def test_the_user_changelist_searches_by_email(admin_client):
    UserFactory(email="ada@example.com")
    UserFactory(email="bob@example.com")

    response = admin_client.get(USERS, {"q": "ada@"})

    assert response.status_code == 200
    assert [u.email for u in response.context["cl"].result_list] == ["ada@example.com"]
