from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from .choices import EntryStatus, Outcome, PolicyAction, PolicyKind, Stage

ZERO = Decimal(0)


class Policy(models.Model):
    """A rule the engine applies before a run starts or a call is made: a budget, a ceiling, a
    limit, an allow-list or an approval rule. A policy without a project applies to every project,
    each on its own (a global $50/day budget gives every project $50/day)."""

    project = models.ForeignKey(
        "projects.Project",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="policies",
        help_text="Empty for a global policy (staff only), applied to each project.",
    )
    name = models.CharField(max_length=200, help_text='e.g. "Daily OpenAI budget".')
    kind = models.CharField(max_length=20, choices=PolicyKind.choices)
    config = models.JSONField(
        default=dict, blank=True, help_text='Depends on the kind, e.g. {"amount_usd": 25, "window": "day"}.'
    )
    action = models.CharField(max_length=20, choices=PolicyAction.choices, default=PolicyAction.BLOCK)
    enabled = models.BooleanField(default=True)
    priority = models.SmallIntegerField(
        default=0, help_text="Higher is checked first; the first blocking policy is the one reported, e.g. 10."
    )
    description = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "id"]
        verbose_name_plural = "policies"
        constraints = [
            models.UniqueConstraint(
                fields=["project", "name"],
                name="policies_policy_unique_name",
                violation_error_message="A policy with this name already exists in the project.",
            ),
            models.UniqueConstraint(
                fields=["name"],
                condition=models.Q(project__isnull=True),
                name="policies_policy_unique_global_name",
                violation_error_message="A global policy with this name already exists.",
            ),
            models.CheckConstraint(
                condition=models.Q(kind__in=PolicyKind.values),
                name="policies_policy_kind_valid",
                violation_error_message="Unknown policy kind.",
            ),
        ]
        indexes = [
            # The engine's lookup: enabled policies of a kind for a project (and the global ones).
            models.Index(fields=["kind", "project"], name="policies_enabled_kind", condition=models.Q(enabled=True)),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        # Imported here, not above: the kinds' judges read the ledger through selectors, which
        # import this module. The registry (policies/kinds/) says what each kind accepts.
        from .configs import action_errors, config_errors

        errors = {}
        if problems := config_errors(self.kind, self.config):
            errors["config"] = problems
        if problems := action_errors(self.kind, self.action):
            errors["action"] = problems
        if errors:
            raise ValidationError(errors)


class PolicyDecision(models.Model):
    """A policy acting: a run refused or held, a call blocked, warned or sent for approval. Calls
    that pass are not recorded here (the ledger has them)."""

    policy = models.ForeignKey(Policy, null=True, blank=True, on_delete=models.SET_NULL, related_name="decisions")
    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="+")
    run = models.ForeignKey("runs.Run", null=True, blank=True, on_delete=models.CASCADE, related_name="decisions")
    step = models.ForeignKey("runs.RunStep", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    stage = models.CharField(max_length=16, choices=Stage.choices)
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    reason = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Decisions of a project, newest first (the API list and the metrics' counts by outcome).
            models.Index(fields=["project", "-created_at"], name="policies_decision_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.outcome}: {self.reason}"


class SpendEntry(models.Model):
    """One provider call in the spend ledger. Written as a reservation of the call's estimated
    maximum cost before the call when a budget or ceiling applies, settled to the actual tokens and
    cost after it; written settled at once otherwise. ``cost_usd`` is empty for an unpriced model."""

    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="spend")
    run = models.ForeignKey("runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="spend")
    step = models.ForeignKey("runs.RunStep", null=True, blank=True, on_delete=models.SET_NULL, related_name="spend")
    attempt = models.PositiveSmallIntegerField(default=1)
    workflow = models.ForeignKey(
        "workflows.Workflow", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    agent = models.ForeignKey("agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Budgets narrowed to an agent or a workflow match these: a deleted agent's spend still counts.
    agent_slug = models.CharField(max_length=64, blank=True, default="")
    workflow_slug = models.CharField(max_length=64, blank=True, default="")
    provider = models.CharField(max_length=32)
    model = models.CharField(max_length=100)
    status = models.CharField(max_length=10, choices=EntryStatus.choices, default=EntryStatus.SETTLED)
    reserved_usd = models.DecimalField(
        max_digits=14, decimal_places=6, default=ZERO, help_text="The estimate held while the call ran."
    )
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    price = models.ForeignKey("agents.ModelPrice", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(help_text="When the call started (or was reserved).")
    settled_at = models.DateTimeField(null=True, blank=True)
    #: The budget totals (BudgetTotal ids) the reservation was added to, in the order they were
    #: locked: settling or releasing it moves the same totals, in the same order.
    counted_in = models.JSONField(default=list, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "spend entries"
        indexes = [
            # Budget sums: a project's entries within a window.
            models.Index(fields=["project", "created_at"], name="policies_spend_window"),
            # Run ceilings: a run's entries.
            models.Index(fields=["run", "status"], name="policies_spend_run"),
            # The reaper: reservations still open (a small slice).
            models.Index(
                fields=["created_at"], name="policies_spend_open", condition=models.Q(status=EntryStatus.RESERVED)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model} {self.cost_usd if self.cost_usd is not None else self.reserved_usd}"

    @property
    def counted_usd(self) -> Decimal:
        """What this entry takes from a budget: the actual cost once settled, else the estimate."""
        if self.status == EntryStatus.SETTLED:
            return self.cost_usd or ZERO
        return self.reserved_usd


class BudgetTotal(models.Model):
    """What a calendar-window budget has spent and holds in reservations in one window, kept with
    the ledger: a reservation adds its estimate, its settle or release moves it. Checking a budget
    before a call reads and locks this one row instead of summing the window's ledger. One row per
    budget, project (a global budget is kept per project), window and version of the policy: an
    edit starts a new total, counted from the ledger. Rolling windows are summed from the ledger."""

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="+")
    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="+")
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    version = models.BigIntegerField(help_text="The policy's updated_at, in microseconds, when this total started.")
    spent = models.DecimalField(max_digits=14, decimal_places=6, default=ZERO)
    reserved = models.DecimalField(max_digits=14, decimal_places=6, default=ZERO)
    started_at = models.DateTimeField(help_text="When this total was counted from the ledger.")
    recounted = models.BooleanField(
        default=False, help_text="Counted from the ledger again once every call in flight when it started had ended."
    )

    class Meta:
        constraints = [
            # The reservation's lookup, and what keeps two workers from starting the same total.
            models.UniqueConstraint(
                fields=["policy", "project", "window_start", "version"],
                name="policies_budgettotal_unique",
                violation_error_message="This budget window already has a total.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.policy_id} {self.window_start:%Y-%m-%d}: {self.spent} spent, {self.reserved} reserved"
