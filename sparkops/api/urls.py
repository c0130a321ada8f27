"""/api/v1: one router for every app's viewsets, plus the auth endpoints."""

from django.urls import include, path

from accounts.api.views import ApiKeyViewSet
from agents.api.views import AgentViewSet, CredentialViewSet, ModelPriceViewSet
from audit.api.views import AuditEntryViewSet
from policies.api.views import (
    BudgetViewSet,
    GuardedToolViewSet,
    PolicyDecisionViewSet,
    PolicyViewSet,
    SpendEntryViewSet,
)
from projects.api.views import MembershipViewSet, ProjectViewSet
from runs.api.views import RunViewSet, WaitingApprovalViewSet, WorkflowRunViewSet
from schedules.api.views import ProjectFreezeViewSet, ScheduleViewSet
from taskboard.api.views import AgentStartTaskViewSet, SandboxViewSet, TaskViewSet
from webhooks.api.views import DeliveryViewSet, EndpointViewSet
from workflows.api.views import WorkflowViewSet

from .routers import router

router.register("projects", ProjectViewSet, basename="project")
router.register("projects", ProjectFreezeViewSet, basename="project-freeze")  # /projects/{id}/freeze
router.register("memberships", MembershipViewSet, basename="membership")
router.register("api-keys", ApiKeyViewSet, basename="api-key")

router.register("agents", AgentViewSet, basename="agent")
router.register("agents", AgentStartTaskViewSet, basename="agent-start-task")  # /agents/{id}/start-task
router.register("tools", GuardedToolViewSet, basename="tool")  # test runs answer to policies
router.register("credentials", CredentialViewSet, basename="credential")
router.register("model-prices", ModelPriceViewSet, basename="model-price")

router.register("workflows", WorkflowViewSet, basename="workflow")
router.register("workflows", WorkflowRunViewSet, basename="workflow-run")  # /workflows/{id}/run

router.register("runs", RunViewSet, basename="run")
router.register("approvals", WaitingApprovalViewSet, basename="approval")  # the inbox: steps waiting
router.register("schedules", ScheduleViewSet, basename="schedule")

router.register("tasks", TaskViewSet, basename="task")
router.register("sandboxes", SandboxViewSet, basename="sandbox")

router.register("policies", PolicyViewSet, basename="policy")
router.register("policy-decisions", PolicyDecisionViewSet, basename="policy-decision")
router.register("spend", SpendEntryViewSet, basename="spend-entry")
router.register("budgets", BudgetViewSet, basename="budget")

router.register("webhooks", EndpointViewSet, basename="webhook")
router.register("webhook-deliveries", DeliveryViewSet, basename="webhook-delivery")
router.register("audit", AuditEntryViewSet, basename="audit-entry")

urlpatterns = [
    path("auth/", include("accounts.api.urls")),
    path("", include("live.api.urls")),
    path("", include(router.urls)),
]
