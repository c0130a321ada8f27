"""The shared API base: what every project-scoped endpoint gets without writing any code (the
create role, objects kept in their project, the scoped related field, ``?project=``), the typed
refusals the one exception handler maps, and the one cursor pagination."""

import inspect
import uuid

import pytest
from django.conf import settings
from rest_framework import exceptions, pagination, serializers
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory, force_authenticate

from accounts import services as accounts_services
from accounts.api.views import LoginView
from agents.models import ProviderCredential
from agents.tests.factories import CredentialFactory
from projects.models import Project
from projects.tests.factories import MembershipFactory
from runs.engine.transitions import TransitionRefused
from sparkops.api import pagination as our_pagination
from sparkops.api.access import NO_SUCH_PROJECT, requested_project_ids
from sparkops.api.exceptions import exception_handler
from sparkops.api.routers import router
from sparkops.api.viewsets import (
    ProjectField,
    ProjectScopedGenericViewSet,
    ProjectScopedViewSet,
    ScopedCreateModelMixin,
    ScopedRelatedField,
    ScopedUpdateModelMixin,
)
from sparkops.lib.errors import Conflict, NotAuthenticated, Refused, TooManyRequests
from sparkops.roles import Role
from workflows.models import WorkflowVersion
from workflows.tests.factories import WorkflowVersionFactory

factory = APIRequestFactory()


# ------------------------------------------------------------------------------
# A viewset that declares only its queryset and serializer
# ------------------------------------------------------------------------------
class BareCredentialSerializer(serializers.ModelSerializer):
    project = ProjectField()

    class Meta:
        model = ProviderCredential
        fields = ["id", "project", "name", "provider"]


class BareViewSet(ProjectScopedViewSet):
    queryset = ProviderCredential.objects.all()
    serializer_class = BareCredentialSerializer


class KeepingViewSet(BareViewSet):
    project_changes_ignored = True


def call(viewset, method: str, action: str, user, data=None, **kwargs):
    request = getattr(factory, method)("/bare", data or {}, format="json")
    force_authenticate(request, user=user)
    return viewset.as_view({method: action})(request, **kwargs)


def create(team, who: str, project: Project | None = None):
    data = {"project": str((project or team.project).pk), "name": "Bare", "provider": "echo"}
    return call(BareViewSet, "post", "create", team.members.get(who, team.outsider), data)


@pytest.fixture
def two_projects_developer(team):
    """A developer in both the team's project and the other one."""
    user = team.members[Role.DEVELOPER]
    MembershipFactory(project=team.other_project, user=user, role=Role.DEVELOPER)
    return user


@pytest.mark.parametrize(
    ("who", "status"), [(Role.OWNER, 201), (Role.ADMIN, 201), (Role.DEVELOPER, 201), (Role.VIEWER, 403)]
)
def test_a_bare_viewset_checks_the_create_role_before_saving(team, who, status):
    response = create(team, who)

    assert response.status_code == status, response.data
    assert ProviderCredential.objects.filter(name="Bare").exists() == (status == 201)
    if status == 403:
        assert response.data["message"] == "This needs the developer role in the project; you have viewer."


def test_a_bare_viewset_answers_a_project_of_someone_else_as_not_existing(team):
    response = create(team, Role.OWNER, team.other_project)

    assert response.status_code == 400
    assert list(response.data["errors"]) == ["project"]
    assert not ProviderCredential.objects.exists()


def test_a_bare_viewset_refuses_creating_in_an_archived_project(team):
    Project.objects.filter(pk=team.project.pk).update(archived=True)

    response = create(team, Role.OWNER)

    assert (response.status_code, response.data["code"]) == (409, "project_archived")
    assert not ProviderCredential.objects.exists()


def test_a_bare_viewset_refuses_moving_an_object_to_another_project(team, two_projects_developer):
    credential = CredentialFactory(project=team.project, name="Stays")
    data = {"project": str(team.other_project.pk), "name": "Renamed"}

    response = call(BareViewSet, "patch", "partial_update", two_projects_developer, data, pk=credential.pk)

    assert response.status_code == 400
    assert response.data["errors"] == {"project": ["A provider credential cannot move to another project."]}
    credential.refresh_from_db()
    assert (credential.project_id, credential.name) == (team.project.pk, "Stays")


def test_a_bare_viewset_accepts_an_update_naming_the_same_project(team):
    credential = CredentialFactory(project=team.project)
    data = {"project": str(team.project.pk), "name": "Renamed"}

    response = call(BareViewSet, "patch", "partial_update", team.members[Role.DEVELOPER], data, pk=credential.pk)

    assert response.status_code == 200, response.data
    assert ProviderCredential.objects.get(pk=credential.pk).name == "Renamed"


def test_a_viewset_may_keep_the_project_instead_of_refusing(team, two_projects_developer):
    credential = CredentialFactory(project=team.project)
    data = {"project": str(team.other_project.pk), "name": "Renamed"}

    response = call(KeepingViewSet, "patch", "partial_update", two_projects_developer, data, pk=credential.pk)

    assert response.status_code == 200, response.data
    assert response.data["project"] == str(team.project.pk)
    credential.refresh_from_db()
    assert (credential.project_id, credential.name) == (team.project.pk, "Renamed")


def _registered(base: type) -> list[type]:
    return [viewset for _, viewset, _ in router.registry if issubclass(viewset, base)]


def test_every_scoped_endpoint_creates_and_updates_through_the_base():
    # A view's own create() or update() would skip the checks above; the two custom creates name
    # their project otherwise (a run: its workflow's; a key: answered with its secret) and call
    # the same checks. (unwrap: the schema decorators wrap the methods they document.)
    custom = {"RunViewSet", "ApiKeyViewSet"}
    for viewset in _registered(ProjectScopedGenericViewSet):
        if hasattr(viewset, "create") and viewset.__name__ not in custom:
            assert inspect.unwrap(viewset.create) is ScopedCreateModelMixin.create, viewset
        if hasattr(viewset, "update"):
            assert inspect.unwrap(viewset.update) is ScopedUpdateModelMixin.update, viewset


def test_the_api_root_lists_a_prefix_registered_twice_once(team):
    body = team.client(Role.VIEWER).get("/api/v1/").json()
    assert {"workflows", "agents", "budgets"} <= set(body)
    assert body["workflows"].endswith("/api/v1/workflows")


# ------------------------------------------------------------------------------
# The scoped related field and ?project=
# ------------------------------------------------------------------------------
def request_of(user, query: str = "") -> Request:
    request = factory.get(f"/bare{query}")
    force_authenticate(request, user=user)
    request = Request(request)
    request.user, request.auth = user, None
    return request


class VersionSerializer(serializers.Serializer):
    version = ScopedRelatedField(queryset=WorkflowVersion.objects.all(), project_path="workflow__project")


def test_a_scoped_field_reads_a_row_of_another_project_as_an_unknown_id(team):
    theirs = WorkflowVersionFactory(workflow__project=team.other_project)
    mine = WorkflowVersionFactory(workflow__project=team.project)
    request = request_of(team.members[Role.VIEWER])

    def error_for(pk) -> str:
        serializer = VersionSerializer(data={"version": pk}, context={"request": request})
        assert not serializer.is_valid()
        return str(serializer.errors["version"][0])

    assert error_for(theirs.pk) == error_for(10**9).replace(str(10**9), str(theirs.pk))
    assert VersionSerializer(data={"version": mine.pk}, context={"request": request}).is_valid()


def test_requested_project_ids_are_all_the_callers_projects_without_a_filter(team, two_projects_developer):
    ids = requested_project_ids(request_of(two_projects_developer))
    assert sorted(ids) == sorted([team.project.pk, team.other_project.pk])


def test_requested_project_ids_narrow_to_the_project_named(team, two_projects_developer):
    query = f"?project={str(team.other_project.pk).upper()}"
    assert requested_project_ids(request_of(two_projects_developer, query)) == [team.other_project.pk]


@pytest.mark.parametrize("named", ["other", "unknown", "malformed"])
def test_requested_project_ids_answer_404_for_a_project_not_the_callers(team, named):
    raw = {"other": team.other_project.pk, "unknown": uuid.uuid4(), "malformed": "not-a-uuid"}[named]
    with pytest.raises(exceptions.NotFound) as refused:
        requested_project_ids(request_of(team.members[Role.OWNER], f"?project={raw}"))
    assert str(refused.value.detail) == NO_SUCH_PROJECT


# ------------------------------------------------------------------------------
# Typed refusals, mapped by the one exception handler
# ------------------------------------------------------------------------------
def handled(exc: Exception, view=None):
    request = Request(factory.post("/api/v1/auth/login"))
    return exception_handler(exc, {"view": view or LoginView(), "request": request})


@pytest.mark.parametrize(
    ("exc", "status", "code", "message"),
    [
        (
            TransitionRefused("Cannot cancel a run that is succeeded."),
            409,
            "conflict",
            "Cannot cancel a run that is succeeded.",
        ),
        (Conflict(), 409, "conflict", Conflict.default_message),
        (accounts_services.InvalidCredentials(), 401, "invalid_credentials", "Invalid email or password."),
        (accounts_services.TokenRevoked(), 401, "token_not_valid", accounts_services.TokenRevoked.default_message),
        (NotAuthenticated(), 401, "not_authenticated", "Not authenticated."),
        (Refused("No."), 400, "refused", "No."),
    ],
)
def test_a_typed_refusal_is_answered_with_its_status_and_code(exc, status, code, message):
    response = handled(exc)
    assert response.status_code == status
    assert response.data == {"status": status, "code": code, "message": message, "errors": {}}


def test_a_401_refusal_carries_the_views_challenge():
    response = handled(accounts_services.InvalidCredentials())
    assert response.headers["WWW-Authenticate"] == LoginView().get_authenticate_header(None)


def test_a_locked_login_is_429_with_retry_after():
    response = handled(accounts_services.LoginLocked())
    wait = settings.SPARKOPS_LOGIN_LOCKOUT_SECONDS
    assert (response.status_code, response.data["code"]) == (429, "throttled")
    assert response.data["message"] == f"Too many failed logins. Try again later. Expected available in {wait} seconds."
    assert response.headers["Retry-After"] == str(wait)


def test_too_many_requests_names_when_to_retry():
    response = handled(TooManyRequests(retry_after=7))
    assert (response.status_code, response.headers["Retry-After"]) == (429, "7")


def test_transition_and_account_refusals_are_typed_refusals():
    assert issubclass(TransitionRefused, Conflict)
    assert issubclass(accounts_services.InvalidCredentials, NotAuthenticated)
    assert issubclass(accounts_services.TokenRevoked, NotAuthenticated)
    assert issubclass(accounts_services.LoginLocked, TooManyRequests)


# ------------------------------------------------------------------------------
# One cursor pagination
# ------------------------------------------------------------------------------
def test_every_cursor_paginated_endpoint_uses_the_one_class():
    cursored = [
        viewset
        for _, viewset, _ in router.registry
        if isinstance(viewset.pagination_class, type)
        and issubclass(viewset.pagination_class, pagination.CursorPagination)
    ]
    assert {viewset.__name__ for viewset in cursored} >= {"RunViewSet", "TaskViewSet", "PolicyDecisionViewSet"}
    assert {viewset.pagination_class for viewset in cursored} == {our_pagination.CursorPagination}
