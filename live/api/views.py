"""``GET /api/v1/sse``: the live stream; ``POST /api/v1/sse/token``: a token to open it with."""

import uuid

from django.conf import settings
from django.db import connection
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, renderers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import ApiKeyAuthentication, JWTAuthentication
from projects.models import Membership
from runs.models import Run
from sparkops.api.access import NO_SUCH_PROJECT, api_key_of, project_roles

from ..authentication import StreamTokenAuthentication
from ..cursor import BadPosition, Position
from ..selectors import EVENTS, NOTICES, Scope
from ..streams import stream
from ..tokens import StreamGrant, stream_token_mint
from .serializers import (
    BAD_POSITION,
    SOURCE_LOGS,
    StreamQuerySerializer,
    StreamTokenRequestSerializer,
    StreamTokenSerializer,
)

NO_SUCH_RUN = "No such run."
STREAM_DESCRIPTION = """Server-Sent Events: every run event and notice of your projects as it
commits. Each message has an `id:` (send it back as `Last-Event-ID` or `?after=` to resume with
nothing missed or repeated), an `event:` (the type) and JSON `data` (run, step, status, tokens,
cost, payload). Comment lines keep idle connections open. Browsers: open it with a token from
`POST /api/v1/sse/token` in `?token=`, since EventSource cannot send headers."""


class EventStreamRenderer(renderers.BaseRenderer):
    """Lets a client that accepts only text/event-stream (EventSource) reach the view."""

    media_type = "text/event-stream"
    format = "sse"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return renderers.JSONRenderer().render(data)


class StreamView(APIView):
    authentication_classes = [StreamTokenAuthentication, JWTAuthentication, ApiKeyAuthentication]
    renderer_classes = [renderers.JSONRenderer, EventStreamRenderer]

    @extend_schema(
        operation_id="sse_stream",
        summary="Live stream of run events and notices (Server-Sent Events)",
        description=STREAM_DESCRIPTION,
        parameters=[
            StreamQuerySerializer,
            OpenApiParameter("Last-Event-ID", str, OpenApiParameter.HEADER, description="Resume after this id."),
        ],
        responses={200: OpenApiResponse(OpenApiTypes.STR, description="text/event-stream")},
        tags=["live"],
    )
    def get(self, request):
        query = StreamQuerySerializer(data=_query(request))
        query.is_valid(raise_exception=True)
        scope = _scope(request, query.validated_data)
        # A browser reconnecting sends the URL it opened (with its first ?after=) and the last id
        # it saw in Last-Event-ID: the header is the newer of the two.
        since = _last_event_id(request) or query.validated_data.get("after")
        # The stream reads through a pool of its own (live/hub.py): give back this request's
        # connection now rather than hold it for as long as the client listens.
        if not connection.in_atomic_block:
            connection.close()
        duration = query.validated_data.get("timeout", settings.SPARKOPS_SSE_MAX_SECONDS)
        frames = stream(scope, since, heartbeat=settings.SPARKOPS_SSE_HEARTBEAT_SECONDS, duration=duration)
        response = StreamingHttpResponse(frames, content_type="text/event-stream")
        response["X-Accel-Buffering"] = "no"  # nginx: pass each message on at once
        return response

    def finalize_response(self, request, response, *args, **kwargs):
        if isinstance(response, Response):  # an error: JSON, whatever the client accepts
            request.accepted_renderer, request.accepted_media_type = renderers.JSONRenderer(), "application/json"
        return super().finalize_response(request, response, *args, **kwargs)


class StreamTokenView(APIView):
    @extend_schema(
        operation_id="sse_token_create",
        summary="A short-lived token to open the live stream with (for EventSource)",
        request=StreamTokenRequestSerializer,
        responses={201: StreamTokenSerializer},
        tags=["live"],
    )
    def post(self, request):
        body = StreamTokenRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        projects = body.validated_data.get("projects") or None
        unknown = [str(p) for p in projects or [] if p not in project_roles(request)]
        if unknown:
            raise exceptions.ValidationError({"projects": [f"{NO_SUCH_PROJECT} {', '.join(unknown)}"]})
        token, expires_at = stream_token_mint(user=request.user, projects=projects, api_key=api_key_of(request))
        answer = {"token": token, "expires_at": expires_at, "projects": projects}
        return Response(StreamTokenSerializer(answer).data, status=status.HTTP_201_CREATED)


def _query(request) -> dict:
    data = {key: request.query_params.get(key) for key in request.query_params}
    for key in ("project", "types"):
        if key in request.query_params:
            data[key] = request.query_params.getlist(key)
    return data


def _last_event_id(request) -> Position | None:
    raw = request.META.get("HTTP_LAST_EVENT_ID", "").strip()
    if not raw:
        return None
    try:
        return Position.decode(raw)
    except (BadPosition, ValueError):
        raise exceptions.ValidationError({"Last-Event-ID": [BAD_POSITION]}) from None


def _scope(request, query: dict) -> Scope:
    """The projects the caller may see, narrowed by the query; 404 for any other project or run."""
    visible = _visible_projects(request)
    projects = set(query.get("project") or visible)
    if not projects <= visible:
        raise exceptions.NotFound(NO_SUCH_PROJECT)
    run = query.get("run")
    if run is not None:
        run_project = Run.objects.filter(pk=run).values_list("project_id", flat=True).first()
        if run_project not in projects:
            raise exceptions.NotFound(NO_SUCH_RUN)
    sources = {SOURCE_LOGS[query["source"]]} if query.get("source") else {EVENTS, NOTICES}
    return Scope(frozenset(projects), run, frozenset(query.get("types", [])), frozenset(sources))


def _visible_projects(request) -> set[uuid.UUID]:
    grant = request.auth
    if not isinstance(grant, StreamGrant):
        return set(project_roles(request))
    memberships = Membership.objects.filter(user=request.user)
    if grant.api_key_id:
        memberships = memberships.filter(project__api_keys__pk=grant.api_key_id)
    if grant.projects is not None:
        memberships = memberships.filter(project_id__in=grant.projects)
    return set(memberships.values_list("project_id", flat=True))
