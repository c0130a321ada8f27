import uuid
from decimal import Decimal

from django.conf import settings
from django.db import models

from .choices import (
    RUN_ACTIVE,
    RUN_TERMINAL,
    Decision,
    EventType,
    RunStatus,
    StepStatus,
    Trigger,
)

ZERO = Decimal(0)


class Run(models.Model):
    """One execution of a pinned workflow version: its inputs, status, outputs and totals. The
    engine changes it; people and programs start, cancel and retry it through services."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="runs")
    workflow = models.ForeignKey("workflows.Workflow", on_delete=models.CASCADE, related_name="runs")
    workflow_version = models.ForeignKey("workflows.WorkflowVersion", on_delete=models.PROTECT, related_name="runs")
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.API)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    title = models.CharField(max_length=200, blank=True, default="", help_text='Optional label, e.g. "Weekly digest".')
    priority = models.SmallIntegerField(default=0, help_text="Higher runs first when slots are scarce, e.g. 5.")
    task_agent = models.ForeignKey(
        "agents.Agent",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="tasks",
        help_text="Set for one-step agent tasks started with /agents/{id}/start-task.",
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The API key that started it, if any (per-key rate limits count these).",
    )
    waiting_on = models.ForeignKey(
        "policies.Policy",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The concurrency limit a queued run waits on for a slot.",
    )
    inputs = models.JSONField(default=dict, blank=True)
    outputs = models.JSONField(default=dict, blank=True)
    error = models.JSONField(
        default=dict, blank=True, help_text='Why it failed, e.g. {"step": "fetch", "message": "..."}.'
    )
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.QUEUED)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=ZERO)
    unpriced_calls = models.PositiveIntegerField(default=0, help_text="Calls to models with no known price.")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries")
    from_step = models.CharField(
        max_length=64, blank=True, default="", help_text='A replay: the step it started from, e.g. "summarize".'
    )
    overrides = models.JSONField(
        default=dict,
        blank=True,
        help_text='A replay\'s per-step changes, e.g. {"summarize": {"model": "gpt-4o-mini"}}.',
    )
    idempotency_key = models.CharField(max_length=200, blank=True, default="")
    request_fingerprint = models.CharField(
        max_length=64,
        blank=True,
        default="",
        editable=False,
        help_text="SHA-256 of the request that created it under an idempotency key; a reused key must match.",
    )
    event_seq = models.PositiveIntegerField(default=0, editable=False)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-queued_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="runs_run_unique_idempotency_key",
                violation_error_message="A run with this idempotency key already exists in the project.",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=RunStatus.values),
                name="runs_run_status_valid",
                violation_error_message="Unknown run status.",
            ),
        ]
        indexes = [
            # The run list: newest first within the caller's projects, cursor-paginated.
            models.Index(fields=["project", "-queued_at", "-id"], name="runs_run_project_recent"),
            # The same over several projects (a caller in many, the admin): newest first, filtered.
            models.Index(fields=["-queued_at", "-id"], name="runs_run_recent"),
            # Filters by workflow and by status within a project.
            models.Index(fields=["workflow", "-queued_at"], name="runs_run_workflow_recent"),
            models.Index(fields=["project", "status", "-queued_at"], name="runs_run_project_status"),
            # The reaper: active runs only (a small slice of a large table).
            models.Index(
                fields=["status", "updated_at"], name="runs_run_active", condition=models.Q(status__in=RUN_ACTIVE)
            ),
        ]

    def __str__(self) -> str:
        """``workflow · title · short id``, e.g. "Research brief · Weekly digest · 3f2a9c1e"."""
        return " · ".join(part for part in (self.workflow.name, self.title, self.short_id) if part)

    @property
    def short_id(self) -> str:
        return str(self.pk)[:8]

    @property
    def is_terminal(self) -> bool:
        return self.status in RUN_TERMINAL


class RunStep(models.Model):
    """One step of a run: what it was given, what it returned, what it cost, and its lease while
    a worker holds it."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    key = models.CharField(max_length=64)
    kind = models.CharField(max_length=16)
    position = models.PositiveSmallIntegerField(default=0, help_text="Order in the definition.")
    status = models.CharField(max_length=20, choices=StepStatus.choices, default=StepStatus.PENDING)
    attempt = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=1)
    lost_workers = models.PositiveSmallIntegerField(
        default=0,
        help_text="Executions whose worker died mid-step (taken over after the lease); they are not retries.",
    )
    input = models.JSONField(default=dict, blank=True, help_text="What the step was given, templates rendered.")
    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(
        default=dict, blank=True, help_text='e.g. {"type": "ProviderError", "message": "...", "permanent": true}.'
    )
    agent = models.ForeignKey("agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    tool = models.ForeignKey("agents.Tool", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    provider = models.CharField(max_length=32, blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=ZERO)
    unpriced_calls = models.PositiveIntegerField(default=0)
    latency_ms = models.FloatField(null=True, blank=True, help_text="Time spent in providers and tools.")
    reused_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    plan_reason = models.CharField(
        max_length=300,
        blank=True,
        default="",
        help_text='In a retry or replay, why the step was reused or runs again, e.g. "its input changed".',
    )
    hold = models.JSONField(
        default=dict,
        blank=True,
        help_text='Why a policy parked the step for approval, e.g. {"policy": 3, "reason": "...", "role": "admin"}.',
    )
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(
        null=True, blank=True, help_text="A running step past this is presumed lost."
    )

    class Meta:
        ordering = ["run_id", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "key"],
                name="runs_step_unique_key",
                violation_error_message="A run has one step per key.",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=StepStatus.values),
                name="runs_step_status_valid",
                violation_error_message="Unknown step status.",
            ),
        ]
        indexes = [
            # The reaper: queued steps whose message may be lost, running steps past their lease.
            models.Index(
                fields=["status", "lease_expires_at"],
                name="runs_step_inflight",
                condition=models.Q(status__in=[StepStatus.QUEUED, StepStatus.RUNNING]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}:{self.key}"


class RunEvent(models.Model):
    """Append-only log of a run: every state change and every LLM or tool call, numbered per run.
    The source for the live stream, webhooks and the audit trail."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    step = models.ForeignKey(RunStep, null=True, blank=True, on_delete=models.CASCADE, related_name="events")
    sequence = models.PositiveIntegerField()
    type = models.CharField(max_length=32, choices=EventType.choices)
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run_id", "sequence"]
        constraints = [
            # Its index serves "events of run R after sequence N".
            models.UniqueConstraint(fields=["run", "sequence"], name="runs_event_unique_sequence")
        ]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.sequence} {self.type}"


class Approval(models.Model):
    """A human decision on a step waiting for one: an approval gate (round 0), or a call a policy
    parked (round n: the step's n-th hold)."""

    step = models.ForeignKey(RunStep, on_delete=models.CASCADE, related_name="approvals")
    round = models.PositiveSmallIntegerField(default=0, help_text="Which hold of the step this decides.")
    decision = models.CharField(max_length=16, choices=Decision.choices)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    comment = models.TextField(blank=True, default="")
    decided_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # Two people deciding at once: the first decision stands.
            models.UniqueConstraint(
                fields=["step", "round"],
                name="runs_approval_one_per_hold",
                violation_error_message="This step was already decided.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.step} {self.decision}"


class CatalogGeneration(models.Model):
    """A number per project that changes whenever anything a step reads of its project's catalog
    changes: its agents, tools, the agents' tools, credentials, policies (and global ones), and the
    model prices. Database triggers keep it (runs/migrations/0011_catalog_generation.py), so no
    write can miss it, the ORM's queryset updates and raw SQL included; the engine's per-process
    cache (runs/engine/catalog.py) reads the catalog again when it differs. Nothing else writes it."""

    project = models.OneToOneField(
        "projects.Project", primary_key=True, on_delete=models.CASCADE, related_name="+", db_constraint=False
    )
    number = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.project_id}: {self.number}"
