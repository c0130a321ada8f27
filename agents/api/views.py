from django.db.models import Exists, OuterRef
from django.db.models.functions import Now
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import exceptions, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from sparkops.api.viewsets import ProjectScopedViewSet, assign
from sparkops.roles import Role

from .. import services, tools
from ..filtersets import AgentFilterSet, CredentialFilterSet, ModelPriceFilterSet, ToolFilterSet
from ..models import Agent, ModelPrice, ProviderCredential, Tool
from .serializers import (
    AgentHealthSerializer,
    AgentSerializer,
    CredentialSerializer,
    ModelPriceSerializer,
    ToolSerializer,
    ToolTestRequestSerializer,
    ToolTestResultSerializer,
)


@extend_schema_view(
    list=extend_schema(summary="List agents"),
    create=extend_schema(summary="Create an agent (developer)"),
    retrieve=extend_schema(summary="Get an agent with its last health check"),
    partial_update=extend_schema(summary="Update an agent (developer)"),
    update=extend_schema(summary="Replace an agent (developer)"),
    destroy=extend_schema(summary="Delete an agent (developer)"),
)
class AgentViewSet(ProjectScopedViewSet):
    """LLM-backed workers: provider, model, system prompt, parameters and allowed tools."""

    queryset = (
        Agent.objects.select_related("credential")
        .prefetch_related("tools")
        .annotate(
            is_priced=Exists(
                ModelPrice.objects.filter(
                    provider=OuterRef("provider"), model=OuterRef("model"), effective_from__lte=Now()
                )
            )
        )
    )
    serializer_class = AgentSerializer
    filterset_class = AgentFilterSet
    search_fields = ["name", "slug", "description", "role", "model"]
    ordering_fields = ["name", "created_at", "provider", "model"]

    project_changes_ignored = True

    def perform_create(self, serializer) -> None:
        data = dict(serializer.validated_data)
        tool_list = data.pop("tools", [])
        serializer.instance = services.agent_save(agent=Agent(**data), tool_list=tool_list)

    def perform_update(self, serializer) -> None:
        data = dict(serializer.validated_data)
        tool_list = data.pop("tools", None)
        agent = services.agent_save(agent=assign(serializer.instance, data), tool_list=tool_list)
        # Read it back: the is_priced annotation was computed for the old provider and model.
        serializer.instance = self.get_queryset().get(pk=agent.pk)

    @extend_schema(
        summary="Check the agent's provider with the cheapest real call", request=None, responses=AgentHealthSerializer
    )
    @action(detail=True, methods=["post"], url_path="health-check")
    def health_check(self, request, pk=None):
        agent = services.agent_health_check(agent=self.get_object())
        return Response(AgentSerializer(agent, context=self.get_serializer_context()).data["health"])


@extend_schema_view(
    list=extend_schema(summary="List provider credentials (never their secrets)"),
    create=extend_schema(summary="Store a provider credential, encrypted (admin)"),
    retrieve=extend_schema(summary="Get a credential (never its secret)"),
    partial_update=extend_schema(summary="Update a credential; send secret to replace it (admin)"),
    update=extend_schema(summary="Replace a credential (admin)"),
    destroy=extend_schema(summary="Delete a credential (admin)"),
)
class CredentialViewSet(ProjectScopedViewSet):
    """Provider API keys and base URLs, encrypted at rest and write-only."""

    queryset = ProviderCredential.objects.all()
    serializer_class = CredentialSerializer
    filterset_class = CredentialFilterSet
    search_fields = ["name", "base_url"]
    ordering_fields = ["name", "created_at"]
    write_role = Role.ADMIN
    project_changes_ignored = True

    def perform_create(self, serializer) -> None:
        data = dict(serializer.validated_data)
        secret = data.pop("secret", "")
        credential = ProviderCredential(**data, created_by=self.request.user)
        serializer.instance = services.credential_save(credential=credential, secret=secret)

    def perform_update(self, serializer) -> None:
        data = dict(serializer.validated_data)
        secret = data.pop("secret", None)
        services.credential_save(credential=assign(serializer.instance, data), secret=secret)


@extend_schema_view(
    list=extend_schema(summary="List tools"),
    create=extend_schema(summary="Create a tool (developer; below admin it starts unclassed: spends_money)"),
    retrieve=extend_schema(summary="Get a tool"),
    partial_update=extend_schema(
        summary="Update a tool (developer; only admins rename it, lower its risk class or turn its approval off)"
    ),
    update=extend_schema(
        summary="Replace a tool (developer; only admins rename it, lower its risk class or turn its approval off)"
    ),
    destroy=extend_schema(summary="Delete a tool (developer)"),
)
class ToolViewSet(ProjectScopedViewSet):
    """What agents and steps may call: HTTP endpoints and vetted built-in functions."""

    queryset = Tool.objects.select_related("credential")
    serializer_class = ToolSerializer
    filterset_class = ToolFilterSet
    search_fields = ["name", "slug", "description"]
    ordering_fields = ["name", "created_at", "kind", "risk_class"]
    project_changes_ignored = True

    def perform_create(self, serializer) -> None:
        data = dict(serializer.validated_data)
        may_label = Role.at_least(self.caller_role(data["project"].pk), Role.ADMIN)
        if not may_label:
            data.setdefault("risk_class", services.UNCLASSED_RISK)  # until an admin classes it
        serializer.instance = services.tool_save(tool=Tool(**data), may_label=may_label)

    def perform_update(self, serializer) -> None:
        data = dict(serializer.validated_data)
        may_label = Role.at_least(self.caller_role(serializer.instance.project_id), Role.ADMIN)
        services.tool_save(tool=assign(serializer.instance, data), may_label=may_label)

    def test_refusal(self, tool: Tool) -> str:
        """Why the caller may not test-run this tool, or "". Policies sit above this app: the
        tools endpoint registered in the API (policies.api.views.GuardedToolViewSet) asks them."""
        return ""

    @extend_schema(
        summary="Run the tool once with the given input (developer)",
        request=ToolTestRequestSerializer,
        responses=ToolTestResultSerializer,
    )
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        tool = self.get_object()
        if reason := self.test_refusal(tool):
            raise exceptions.PermissionDenied(reason)
        payload = ToolTestRequestSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            result = services.tool_execute(tool=tool, arguments=payload.validated_data["input"])
        except tools.ToolError as exc:
            return Response({"ok": False, "error": str(exc), "permanent": exc.permanent})
        return Response({"ok": True, "output": result.output, "latency_ms": round(result.latency_ms, 2)})


@extend_schema_view(
    list=extend_schema(summary="List model prices (?current=true for the prices in force now)"),
    retrieve=extend_schema(summary="Get a model price"),
)
class ModelPriceViewSet(viewsets.ReadOnlyModelViewSet):
    """USD per million tokens by provider and model; a price change adds a row. Edited in the admin."""

    queryset = ModelPrice.objects.all()
    serializer_class = ModelPriceSerializer
    filterset_class = ModelPriceFilterSet
    search_fields = ["provider", "model"]
    ordering_fields = ["provider", "model", "effective_from"]
