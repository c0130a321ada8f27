"""/api/v1: one router for every app's viewsets, plus the auth endpoints."""

from django.urls import include, path

from accounts.api.views import ApiKeyViewSet
from projects.api.views import MembershipViewSet, ProjectViewSet

from .routers import router

router.register("projects", ProjectViewSet, basename="project")
router.register("memberships", MembershipViewSet, basename="membership")
router.register("api-keys", ApiKeyViewSet, basename="api-key")

urlpatterns = [
    path("auth/", include("accounts.api.urls")),
    path("", include(router.urls)),
]
