"""/api/v1: one router for every app's viewsets, plus the auth endpoints."""

from django.urls import include, path

from accounts.api.views import ApiKeyViewSet
from agents.api.views import AgentViewSet, CredentialViewSet, ModelPriceViewSet, ToolViewSet
from projects.api.views import MembershipViewSet, ProjectViewSet

from .routers import router

router.register("projects", ProjectViewSet, basename="project")
router.register("memberships", MembershipViewSet, basename="membership")
router.register("api-keys", ApiKeyViewSet, basename="api-key")

router.register("agents", AgentViewSet, basename="agent")
router.register("tools", ToolViewSet, basename="tool")
router.register("credentials", CredentialViewSet, basename="credential")
router.register("model-prices", ModelPriceViewSet, basename="model-price")

urlpatterns = [
    path("auth/", include("accounts.api.urls")),
    path("", include(router.urls)),
]
