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
    # Run inside the task's sandbox (the task board registers their executors).
    SANDBOX_EXEC = "sandbox_exec", "Command in the sandbox"
    READ_FILE = "read_file", "Read a sandbox file"
    WRITE_FILE = "write_file", "Write a sandbox file"
    GIT_COMMIT = "git_commit", "Commit in the sandbox"


class WorkStatus(models.TextChoices):
    """What a task board shows of an agent: busy while a task of its is in progress."""

    IDLE = "idle", "Idle"
    BUSY = "busy", "Busy"


#: Credentials for services other than LLM providers, e.g. a GitHub token for pull requests.
SERVICE_CREDENTIALS = ("github",)


class RiskClass(models.TextChoices):
    """Ordered from harmless to costly; approval policies act on a class and those above it."""

    READ = "read", "Reads data"
    WRITE = "write", "Writes data"
    DESTRUCTIVE = "destructive", "Deletes or overwrites"
    SPENDS_MONEY = "spends_money", "Spends money"
