import uuid
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from sparkops.lib import crypto

from . import providers
from .choices import SERVICE_CREDENTIALS, AgentStatus, HealthStatus, RiskClass, ToolKind, WorkStatus


def validate_provider(value: str) -> None:
    if value not in providers.names():
        raise ValidationError(f"Unknown provider {value!r}; one of: {', '.join(providers.names())}.")


def validate_credential_provider(value: str) -> None:
    if value not in [*providers.names(), *SERVICE_CREDENTIALS]:
        known = ", ".join([*providers.names(), *SERVICE_CREDENTIALS])
        raise ValidationError(f"Unknown provider {value!r}; one of: {known}.")


class ProviderCredential(models.Model):
    """An API key (and optional base URL) for one provider, used by a project's agents and tools.
    The secret is encrypted at rest and never leaves the server."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="credentials")
    name = models.CharField(max_length=100, help_text='e.g. "OpenAI production key".')
    provider = models.CharField(
        max_length=32,
        validators=[validate_credential_provider],
        help_text='e.g. "openai"; "github" for a token that pushes branches and opens pull requests.',
    )
    base_url = models.URLField(
        blank=True,
        default="",
        help_text='Optional; e.g. "http://vllm.internal:8000/v1", or "https://ghe.example.com/api/v3" for github.',
    )
    secret_encrypted = models.TextField(blank=True, default="", editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "name"],
                name="agents_credential_unique_name",
                violation_error_message="A credential with this name already exists in the project.",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def has_secret(self) -> bool:
        return bool(self.secret_encrypted)

    def set_secret(self, value: str) -> None:
        self.secret_encrypted = crypto.encrypt(value) if value else ""

    def get_secret(self) -> str:
        return crypto.decrypt(self.secret_encrypted) if self.secret_encrypted else ""

    def as_provider_credential(self) -> providers.base.Credential:
        return providers.base.Credential(api_key=self.get_secret(), base_url=self.base_url)


class Tool(models.Model):
    """Something agents and steps may call: an HTTP endpoint or a vetted built-in function."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="tools")
    name = models.CharField(max_length=100, help_text='e.g. "Search tickets".')
    slug = models.SlugField(
        max_length=64, help_text='Unique in the project; the name agents call it by, e.g. "search_tickets".'
    )
    description = models.TextField(blank=True, default="", help_text="Told to the model: when and why to call it.")
    kind = models.CharField(max_length=16, choices=ToolKind.choices)
    input_schema = models.JSONField(
        default=dict, blank=True, help_text='JSON Schema of the input, e.g. {"type": "object"}.'
    )
    config = models.JSONField(
        default=dict, blank=True, help_text="Kind-specific: http {method, url, headers, timeout}; builtin {function}."
    )
    credential = models.ForeignKey(
        ProviderCredential, null=True, blank=True, on_delete=models.SET_NULL, related_name="tools"
    )
    risk_class = models.CharField(max_length=16, choices=RiskClass.choices, default=RiskClass.READ)
    requires_approval = models.BooleanField(default=False, help_text="Every call waits for a human decision.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "slug"],
                name="agents_tool_unique_slug",
                violation_error_message="A tool with this slug already exists in the project.",
            )
        ]

    def __str__(self) -> str:
        return self.name


class Agent(models.Model):
    """An LLM-backed worker: a provider and model, a system prompt, parameters and the tools it
    may call."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="agents")
    name = models.CharField(max_length=100, help_text='e.g. "Researcher".')
    slug = models.SlugField(max_length=64, help_text='Unique in the project; workflows refer to it, e.g. "researcher".')
    description = models.TextField(blank=True, default="")
    role = models.CharField(max_length=100, blank=True, default="", help_text='Free text, e.g. "researcher".')
    provider = models.CharField(
        max_length=32, validators=[validate_provider], help_text='e.g. "openai", "anthropic", "echo".'
    )
    model = models.CharField(max_length=100, help_text='e.g. "gpt-4o-mini".')
    system_prompt = models.TextField(blank=True, default="")
    parameters = models.JSONField(default=dict, blank=True, help_text='e.g. {"temperature": 0.2, "max_tokens": 1024}.')
    tools = models.ManyToManyField(Tool, blank=True, related_name="agents", help_text="Tools the agent may call.")
    credential = models.ForeignKey(
        ProviderCredential, null=True, blank=True, on_delete=models.SET_NULL, related_name="agents"
    )
    max_tool_iterations = models.PositiveSmallIntegerField(
        default=5,
        validators=[MinValueValidator(1), MaxValueValidator(50)],
        help_text="Tool-call rounds per step, at most.",
    )
    status = models.CharField(max_length=16, choices=AgentStatus.choices, default=AgentStatus.ACTIVE)
    avatar_url = models.URLField(blank=True, default="", help_text='e.g. "https://example.com/ada.png".')
    current_task = models.ForeignKey(
        "taskboard.Task",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
        help_text="The task the agent works on now; set and cleared by the task board.",
    )
    health_status = models.CharField(
        max_length=16, choices=HealthStatus.choices, default=HealthStatus.UNKNOWN, editable=False
    )
    health_latency_ms = models.FloatField(null=True, blank=True, editable=False)
    health_error = models.TextField(blank=True, default="", editable=False)
    health_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "slug"],
                name="agents_agent_unique_slug",
                violation_error_message="An agent with this slug already exists in the project.",
            ),
            models.CheckConstraint(
                condition=models.Q(max_tool_iterations__gte=1, max_tool_iterations__lte=50),
                name="agents_agent_tool_iterations_range",
                violation_error_message="Tool iterations must be between 1 and 50.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.status == AgentStatus.ACTIVE

    @property
    def work_status(self) -> str:
        return WorkStatus.BUSY if self.current_task_id else WorkStatus.IDLE


class ModelPrice(models.Model):
    """A provider's list price for a model from a moment on. A price change adds a row; a call is
    priced with the row in force when it was made."""

    provider = models.CharField(max_length=32, help_text='e.g. "openai".')
    model = models.CharField(max_length=100, help_text='e.g. "gpt-4o-mini".')
    input_usd_per_mtok = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        validators=[MinValueValidator(Decimal(0))],
        help_text="USD per million input tokens, e.g. 0.15.",
    )
    output_usd_per_mtok = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        validators=[MinValueValidator(Decimal(0))],
        help_text="USD per million output tokens, e.g. 0.60.",
    )
    effective_from = models.DateTimeField(help_text="The price applies to calls made at or after this time.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["provider", "model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "model", "effective_from"],
                name="agents_modelprice_unique_start",
                violation_error_message="A price for this model already starts at this time.",
            )
        ]
        # Serves "the price in force at T": provider = ? AND model = ? AND effective_from <= T
        # ORDER BY effective_from DESC LIMIT 1 (the unique constraint's index is ascending).
        indexes = [models.Index(fields=["provider", "model", "-effective_from"], name="agents_modelprice_lookup")]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model} from {self.effective_from:%Y-%m-%d}"

    def cost(self, input_tokens: int, output_tokens: int) -> Decimal:
        million = Decimal(1_000_000)
        return (self.input_usd_per_mtok * input_tokens + self.output_usd_per_mtok * output_tokens) / million
