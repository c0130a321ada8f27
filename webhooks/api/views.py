"""/api/v1/webhooks and /api/v1/webhook-deliveries: endpoints that send a project's notices out
(signed webhooks, Slack, email), their secrets, tests, and the delivery log with redeliver.
Only admins and owners read or write them: an endpoint sends project data outside, and its URL
(a Slack incoming webhook) is often a credential itself."""

from datetime import timedelta

from django.db.models import Q
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.response import Response

from sparkops.api.access import project_roles
from sparkops.api.pagination import CursorPagination
from sparkops.api.viewsets import ProjectScopedGenericViewSet, ProjectScopedViewSet, assign
from sparkops.roles import Role

from .. import services
from ..choices import DeliveryStatus
from ..filtersets import DeliveryFilterSet, EndpointFilterSet
from ..models import Delivery, Endpoint
from .serializers import (
    DeliverySerializer,
    EndpointCreatedSerializer,
    EndpointSerializer,
    RotatedSecretSerializer,
    RotateSecretSerializer,
)


class AdminsList:
    """A list shows only the projects where the caller may read these (admin and up); one object
    of a project the caller is a lesser member of answers 403, as everywhere."""

    def visible(self) -> Q:
        if self.action != "list":
            return super().visible()
        roles = project_roles(self.request)
        return Q(project_id__in=[pid for pid, role in roles.items() if Role.at_least(role, self.read_role)])


@extend_schema_view(
    list=extend_schema(summary="List webhook and notification endpoints (admin)"),
    create=extend_schema(
        summary="Add an endpoint; its signing secret is in this answer only (admin)",
        responses={201: EndpointCreatedSerializer},
    ),
    retrieve=extend_schema(summary="Get an endpoint (admin)"),
    partial_update=extend_schema(summary="Edit an endpoint; enabling it again clears its failures (admin)"),
    update=extend_schema(summary="Replace an endpoint (admin)"),
    destroy=extend_schema(summary="Delete an endpoint and its delivery log (admin)"),
)
class EndpointViewSet(AdminsList, ProjectScopedViewSet):
    queryset = Endpoint.objects.all()
    serializer_class = EndpointSerializer
    filterset_class = EndpointFilterSet
    search_fields = ["url", "description", "email_to"]
    ordering_fields = ["created_at"]
    read_role = Role.ADMIN
    write_role = Role.ADMIN

    def perform_create(self, serializer) -> None:
        endpoint = Endpoint(**serializer.validated_data, created_by=self.request.user)
        endpoint, secret = services.endpoint_create(endpoint=endpoint)
        endpoint.secret = secret
        serializer.instance = endpoint

    def get_serializer_class(self):
        return EndpointCreatedSerializer if self.action == "create" else super().get_serializer_class()

    def perform_update(self, serializer) -> None:
        services.endpoint_update(endpoint=assign(serializer.instance, serializer.validated_data))

    @extend_schema(
        summary="Send a webhook.test message now and log it (admin)",
        request=None,
        responses={201: DeliverySerializer},
    )
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        delivery = services.endpoint_test(endpoint=self.get_object())
        return Response(DeliverySerializer(delivery).data, status=201)

    @extend_schema(
        summary="Rotate the signing secret; the old one also signs during the overlap (admin)",
        request=RotateSecretSerializer,
        responses=RotatedSecretSerializer,
    )
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, pk=None):
        endpoint = self.get_object()
        body = RotateSecretSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        overlap = timedelta(hours=body.validated_data["overlap_hours"])
        secret = services.secret_rotate(endpoint=endpoint, overlap=overlap)
        return Response({"secret": secret, "previous_secret_expires_at": endpoint.previous_secret_expires_at})

    @extend_schema(
        summary="The endpoint's deliveries, newest first (admin)",
        parameters=[OpenApiParameter("status", str, enum=DeliveryStatus.values)],
        responses=DeliverySerializer(many=True),
    )
    @action(detail=True, methods=["get"], filterset_class=None)
    def deliveries(self, request, pk=None):
        deliveries = self.get_object().deliveries.prefetch_related("attempt_log").order_by("-created_at")
        if status := request.query_params.get("status"):
            deliveries = deliveries.filter(status=status)
        page = self.paginate_queryset(deliveries)
        return self.get_paginated_response(DeliverySerializer(page, many=True).data)


@extend_schema_view(
    list=extend_schema(summary="Webhook and notification deliveries, with their attempts (admin)"),
    retrieve=extend_schema(summary="Get a delivery with its attempts (admin)"),
)
class DeliveryViewSet(AdminsList, mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedGenericViewSet):
    queryset = Delivery.objects.prefetch_related("attempt_log")
    serializer_class = DeliverySerializer
    filterset_class = DeliveryFilterSet
    pagination_class = CursorPagination
    ordering_fields = ["created_at"]
    read_role = Role.ADMIN
    write_role = Role.ADMIN

    @extend_schema(
        summary="Send again from the first attempt, same webhook-id (admin)",
        request=None,
        responses={202: DeliverySerializer},
    )
    @action(detail=True, methods=["post"])
    def redeliver(self, request, pk=None):
        delivery = services.delivery_redeliver(delivery=self.get_object())
        return Response(DeliverySerializer(delivery).data, status=202)
