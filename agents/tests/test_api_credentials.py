"""/api/v1/credentials: admins write, members read, and the secret never comes back."""

import json

import pytest

from agents.models import ProviderCredential
from projects.tests.factories import MembershipFactory
from sparkops.lib import crypto
from sparkops.roles import Role
from sparkops.testing import ROLES

from .factories import CredentialFactory

LIST_URL = "/api/v1/credentials"
ERROR_KEYS = {"status", "code", "message", "errors"}
SECRET = "sk-live-0123456789abcdef"
ADMINS = [(Role.OWNER, True), (Role.ADMIN, True), (Role.DEVELOPER, False), (Role.VIEWER, False)]


def detail_url(credential) -> str:
    return f"{LIST_URL}/{credential.pk}"


def assert_error(response, status: int) -> dict:
    body = response.json()
    assert response.status_code == status, body
    assert set(body) == ERROR_KEYS
    return body


def assert_no_secret(response) -> None:
    assert SECRET not in response.content.decode()
    rows = response.json().get("results", [response.json()])
    for row in rows:
        assert "secret" not in row
        assert "secret_encrypted" not in row


def stored(credential) -> ProviderCredential:
    return ProviderCredential.objects.get(pk=credential.pk)


def create(client, project, **fields):
    data = {"project": str(project.pk), "name": "OpenAI prod", "provider": "openai", "secret": SECRET} | fields
    return client.post(LIST_URL, data)


@pytest.fixture
def credential(team):
    return CredentialFactory(project=team.project, name="Prod key", secret=SECRET)


# ------------------------------------------------------------------------------
# Roles and isolation
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_every_member_lists_and_reads_credentials_without_the_secret(team, credential, role):
    CredentialFactory(project=team.other_project)
    client = team.client(role)

    listed = client.get(LIST_URL)
    read = client.get(detail_url(credential))

    assert [row["id"] for row in listed.json()["results"]] == [str(credential.pk)]
    assert read.status_code == 200
    assert (read.json()["name"], read.json()["has_secret"]) == ("Prod key", True)
    assert_no_secret(listed)
    assert_no_secret(read)


def test_an_outsider_cannot_reach_a_credential(team, credential):
    outsider = team.client("outsider")
    assert outsider.get(LIST_URL).json()["results"] == []
    assert_error(outsider.get(LIST_URL, {"project": str(team.project.pk)}), 404)
    assert_error(outsider.get(detail_url(credential)), 404)
    assert_error(outsider.patch(detail_url(credential), {"secret": "stolen"}), 404)
    assert_error(outsider.delete(detail_url(credential)), 404)
    assert stored(credential).get_secret() == SECRET


def test_a_member_listing_another_project_gets_404(team, credential):
    assert_error(team.client("owner").get(LIST_URL, {"project": str(team.other_project.pk)}), 404)


def test_an_outsider_cannot_create_a_credential_in_the_team_project(team):
    body = assert_error(create(team.client("outsider"), team.project), 400)
    assert "does not exist" in body["errors"]["project"][0]
    assert not ProviderCredential.objects.exists()


def test_unauthenticated_callers_are_refused(team, credential, api_client):
    assert_error(api_client.get(LIST_URL), 401)
    assert_error(create(api_client, team.project), 401)
    assert ProviderCredential.objects.count() == 1


@pytest.mark.parametrize(("role", "allowed"), ADMINS)
def test_creating_a_credential_needs_the_admin_role(team, role, allowed):
    response = create(team.client(role), team.project)
    if allowed:
        assert response.status_code == 201, response.json()
        assert_no_secret(response)
        assert response.json()["has_secret"] is True
        created = ProviderCredential.objects.get()
        assert (created.project, created.name, created.created_by) == (team.project, "OpenAI prod", team.members[role])
    else:
        assert_error(response, 403)
        assert not ProviderCredential.objects.exists()


@pytest.mark.parametrize(("role", "allowed"), ADMINS)
def test_updating_a_credential_needs_the_admin_role(team, credential, role, allowed):
    response = team.client(role).patch(detail_url(credential), {"secret": "sk-new", "name": "Renamed"})
    if allowed:
        assert response.status_code == 200, response.json()
        assert (stored(credential).name, stored(credential).get_secret()) == ("Renamed", "sk-new")
    else:
        assert_error(response, 403)
        assert (stored(credential).name, stored(credential).get_secret()) == ("Prod key", SECRET)


@pytest.mark.parametrize(("role", "allowed"), ADMINS)
def test_deleting_a_credential_needs_the_admin_role(team, credential, role, allowed):
    response = team.client(role).delete(detail_url(credential))
    if allowed:
        assert response.status_code == 204
        assert not ProviderCredential.objects.exists()
    else:
        assert_error(response, 403)
        assert ProviderCredential.objects.exists()


# ------------------------------------------------------------------------------
# The secret
# ------------------------------------------------------------------------------
def test_the_secret_is_stored_encrypted(team):
    response = create(team.client("admin"), team.project)
    row = ProviderCredential.objects.values("secret_encrypted").get(pk=response.json()["id"])
    assert row["secret_encrypted"]
    assert SECRET not in row["secret_encrypted"]
    assert ProviderCredential.objects.get().get_secret() == SECRET


def test_surrounding_whitespace_is_trimmed_from_the_secret(team):
    create(team.client("admin"), team.project, secret=f"  {SECRET}\n")
    assert ProviderCredential.objects.get().get_secret() == SECRET


def test_a_credential_without_a_secret_says_so(team):
    response = create(team.client("admin"), team.project, secret="", base_url="http://vllm.internal:8000/v1")
    assert response.status_code == 201, response.json()
    assert response.json()["has_secret"] is False
    assert (ProviderCredential.objects.get().secret_encrypted, response.json()["base_url"]) == (
        "",
        "http://vllm.internal:8000/v1",
    )


def test_patch_without_a_secret_keeps_it(team, credential):
    before = stored(credential).secret_encrypted
    response = team.client("admin").patch(detail_url(credential), {"base_url": "https://proxy.example.com/v1"})
    assert response.status_code == 200, response.json()
    assert_no_secret(response)
    assert (stored(credential).secret_encrypted, stored(credential).base_url) == (
        before,
        "https://proxy.example.com/v1",
    )


def test_patch_with_a_new_secret_replaces_it(team, credential):
    response = team.client("admin").patch(detail_url(credential), {"secret": "sk-rotated"})
    assert response.status_code == 200
    assert response.json()["has_secret"] is True
    assert "sk-rotated" not in response.content.decode()
    assert stored(credential).get_secret() == "sk-rotated"
    assert "sk-rotated" not in stored(credential).secret_encrypted


def test_patch_with_an_empty_secret_clears_it(team, credential):
    response = team.client("admin").patch(detail_url(credential), {"secret": ""})
    assert response.json()["has_secret"] is False
    assert not stored(credential).has_secret


def test_a_credential_never_moves_to_another_project(team, credential):
    MembershipFactory(project=team.other_project, user=team.members[Role.OWNER], role=Role.OWNER)
    response = team.client("owner").patch(detail_url(credential), {"project": str(team.other_project.pk)})
    assert response.status_code == 200, response.json()
    assert response.json()["project"] == str(team.project.pk)
    assert stored(credential).project == team.project


# ------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------
def test_an_unknown_provider_is_refused(team):
    body = assert_error(create(team.client("admin"), team.project, provider="skynet"), 400)
    assert "provider" in body["errors"]
    assert not ProviderCredential.objects.exists()


def test_a_base_url_must_be_a_url(team):
    body = assert_error(create(team.client("admin"), team.project, base_url="not a url"), 400)
    assert "base_url" in body["errors"]


def test_the_name_is_unique_in_a_project(team, credential):
    body = assert_error(create(team.client("admin"), team.project, name="Prod key"), 400)
    assert "already exists" in json.dumps(body)
    assert ProviderCredential.objects.filter(name="Prod key").count() == 1


def test_credentials_are_listed_without_decrypting_even_when_their_key_left_the_ring(team, settings):
    settings.SPARKOPS_ENCRYPTION_KEYS = [crypto.generate_key()]
    credential = CredentialFactory(project=team.project, secret=SECRET)
    settings.SPARKOPS_ENCRYPTION_KEYS = [crypto.generate_key()]

    response = team.client("viewer").get(detail_url(credential))

    assert (response.status_code, response.json()["has_secret"]) == (200, True)
    with pytest.raises(crypto.DecryptionError):
        stored(credential).get_secret()
