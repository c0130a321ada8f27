from django.conf import settings
from django.db import transaction
from django.db.models import Q
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from sparkops.api.access import project_roles
from sparkops.api.permissions import DenyApiKeys
from sparkops.api.throttling import ClientScopedRateThrottle
from sparkops.api.viewsets import ProjectScopedGenericViewSet
from sparkops.lib.client_address import client_address
from sparkops.roles import Role

from .. import services
from ..authentication import JWTAuthentication
from ..filtersets import ApiKeyFilterSet
from ..models import ApiKey
from .serializers import (
    ApiKeyCreatedSerializer,
    ApiKeySerializer,
    LoginResponseSerializer,
    LoginSerializer,
    LogoutSerializer,
    MeUpdateResponseSerializer,
    MeUpdateSerializer,
    RefreshRequestSerializer,
    RegisterSerializer,
    TokenPairSerializer,
    UserSerializer,
)

ERRORS = {
    400: OpenApiResponse(description="Invalid input, with field-level messages."),
    401: OpenApiResponse(description="Not authenticated or invalid credentials."),
}


def _set_refresh_cookie(response: Response, refresh: str) -> None:
    response.set_cookie(
        settings.SPARKOPS_REFRESH_COOKIE_NAME,
        refresh,
        max_age=int(settings.SIMPLE_JWT["REFRESH_TOKEN_LIFETIME"].total_seconds()),
        path=settings.SPARKOPS_REFRESH_COOKIE_PATH,
        secure=settings.SPARKOPS_REFRESH_COOKIE_SECURE,
        httponly=True,
        samesite="Lax",
    )


def _token_response(
    tokens: dict, *, use_cookie: bool, extra: dict | None = None, status_code=status.HTTP_200_OK
) -> Response:
    body = {**(extra or {}), "access": tokens["access"]}
    if not use_cookie:
        body["refresh"] = tokens["refresh"]
    response = Response(body, status=status_code)
    if use_cookie:
        _set_refresh_cookie(response, tokens["refresh"])
    return response


def _refresh_from(request) -> tuple[str, bool]:
    """The refresh token from the body, else from the cookie; and whether it came from the cookie."""
    raw = request.data.get("refresh") if hasattr(request.data, "get") else None
    if raw:
        return raw, False
    raw = request.COOKIES.get(settings.SPARKOPS_REFRESH_COOKIE_NAME)
    if not raw:
        raise exceptions.ValidationError({"refresh": ["Send a refresh token in the body or the refresh cookie."]})
    return raw, True


class CredentialsInBodyView(APIView):
    """An endpoint that takes its credentials in the body, not from a request authenticator.

    With no authenticators DRF has no WWW-Authenticate challenge and turns every 401 into a 403;
    a wrong password or a bad refresh token is "not authenticated" (401), so name the scheme
    the tokens are for.
    """

    permission_classes = [AllowAny]
    authentication_classes: list = []

    def get_authenticate_header(self, request) -> str:
        return JWTAuthentication().authenticate_header(request)


class RegisterView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [ClientScopedRateThrottle]
    throttle_scope = "register"

    @extend_schema(
        summary="Register a user (when registration is open)",
        request=RegisterSerializer,
        responses={201: UserSerializer, 403: OpenApiResponse(description="Registration is closed."), **ERRORS},
        tags=["auth"],
    )
    def post(self, request):
        if not settings.SPARKOPS_REGISTRATION_OPEN:
            raise exceptions.PermissionDenied("Registration is closed; ask an administrator for an account.")
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = services.user_create(**serializer.validated_data)
        return Response(UserSerializer(user).data, status=status.HTTP_201_CREATED)


class LoginView(CredentialsInBodyView):
    @extend_schema(
        summary="Log in with email and password",
        request=LoginSerializer,
        responses={200: LoginResponseSerializer, 429: OpenApiResponse(description="Too many failed logins."), **ERRORS},
        tags=["auth"],
    )
    def post(self, request):
        serializer = LoginSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        user, tokens = services.user_login(
            request=request, email=data["email"], password=data["password"], client=client_address(request)
        )
        return _token_response(tokens, use_cookie=data["use_cookie"], extra={"user": UserSerializer(user).data})


class RefreshView(CredentialsInBodyView):
    @extend_schema(
        summary="Exchange a refresh token for a new pair (the old one stops working)",
        request=RefreshRequestSerializer,
        responses={200: TokenPairSerializer, **ERRORS},
        tags=["auth"],
    )
    def post(self, request):
        serializer = RefreshRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        raw, from_cookie = _refresh_from(request)
        tokens = services.token_rotate(raw_refresh=raw)
        return _token_response(tokens, use_cookie=from_cookie or serializer.validated_data["use_cookie"])


class LogoutView(CredentialsInBodyView):
    @extend_schema(
        summary="Log out: revoke the refresh token and clear its cookie",
        request=LogoutSerializer,
        responses={204: None, **ERRORS},
        tags=["auth"],
    )
    def post(self, request):
        raw, _ = _refresh_from(request)
        services.token_revoke(raw_refresh=raw)
        response = Response(status=status.HTTP_204_NO_CONTENT)
        response.delete_cookie(
            settings.SPARKOPS_REFRESH_COOKIE_NAME, path=settings.SPARKOPS_REFRESH_COOKIE_PATH, samesite="Lax"
        )
        return response


class MeView(APIView):
    permission_classes = [IsAuthenticated]

    def get_permissions(self):
        if self.request.method != "GET":
            return [IsAuthenticated(), DenyApiKeys()]
        return super().get_permissions()

    @extend_schema(summary="The current user", responses={200: UserSerializer, **ERRORS}, tags=["auth"])
    def get(self, request):
        return Response(UserSerializer(request.user).data)

    @extend_schema(
        summary="Change your name and/or password (a password change revokes older tokens)",
        request=MeUpdateSerializer,
        responses={200: MeUpdateResponseSerializer, **ERRORS, 403: OpenApiResponse(description="API keys cannot.")},
        tags=["auth"],
    )
    def patch(self, request):
        serializer = MeUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        body = {}
        # One transaction: a refused password change must not leave the new name saved.
        with transaction.atomic():
            if "name" in data:
                services.user_update(user=request.user, name=data["name"])
            if "new_password" in data:
                body = services.user_change_password(
                    user=request.user, current_password=data["current_password"], new_password=data["new_password"]
                )
        return Response({"user": UserSerializer(request.user).data, **body})


@extend_schema_view(
    list=extend_schema(summary="List API keys you created, or all keys of projects you administer"),
    create=extend_schema(
        summary="Create an API key (the full key is in this response only)", responses={201: ApiKeyCreatedSerializer}
    ),
    retrieve=extend_schema(summary="Get an API key (never the key itself)"),
    destroy=extend_schema(summary="Revoke an API key (its creator or a project admin)"),
)
class ApiKeyViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    ProjectScopedGenericViewSet,
):
    """Keys for programs: act for their creator in one project with at most the key's role."""

    queryset = ApiKey.objects.all()
    serializer_class = ApiKeySerializer
    filterset_class = ApiKeyFilterSet
    search_fields = ["name", "prefix"]
    ordering_fields = ["created_at", "name", "last_used_at"]
    permission_classes = [IsAuthenticated, DenyApiKeys]
    write_role = Role.VIEWER  # anyone may hold keys up to their own role; revocation is checked below
    # Keys to read an archived project's history may still be made, and any key revoked.
    writable_when_archived = frozenset({"create", "destroy"})

    def get_queryset(self):
        administered = [pid for pid, role in project_roles(self.request).items() if Role.at_least(role, Role.ADMIN)]
        return super().get_queryset().filter(Q(created_by=self.request.user) | Q(project_id__in=administered))

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        self.check_create_role(serializer.validated_data)
        project = serializer.validated_data.pop("project")
        key, raw = services.api_key_create(
            user=request.user, creator_role=self.caller_role(project.pk), project=project, **serializer.validated_data
        )
        key.key = raw
        return Response(
            ApiKeyCreatedSerializer(key, context=self.get_serializer_context()).data, status=status.HTTP_201_CREATED
        )

    def perform_destroy(self, instance: ApiKey) -> None:
        if instance.created_by_id != self.request.user.pk:
            self.check_project_role(instance.project_id, Role.ADMIN)
        services.api_key_revoke(key=instance)
