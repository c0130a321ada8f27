from django.db import models


class AgentStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    DISABLED = "disabled", "Disabled"


class HealthStatus(models.TextChoices):
    UNKNOWN = "unknown", "Unknown"
    HEALTHY = "healthy", "Healthy"
    UNHEALTHY = "unhealthy", "Unhealthy"


class ToolKind(models.TextChoices):
    HTTP = "http", "HTTP endpoint"
    BUILTIN = "builtin", "Built-in function"


class RiskClass(models.TextChoices):
    """Ordered from harmless to costly; approval policies act on a class and those above it."""

    READ = "read", "Reads data"
    WRITE = "write", "Writes data"
    DESTRUCTIVE = "destructive", "Deletes or overwrites"
    SPENDS_MONEY = "spends_money", "Spends money"
