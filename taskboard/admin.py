from django.contrib import admin

from runs.admin import ReadOnlyInline
from sparkops.admin_scoping import ReadOnlyAdmin

from .models import GitOperation, Sandbox, Task


class GitOperationInline(ReadOnlyInline):
    model = GitOperation
    fk_name = "sandbox"
    fields = ["kind", "status", "commit_sha", "error", "started_at", "finished_at"]
    readonly_fields = fields


@admin.register(Task)
class TaskAdmin(ReadOnlyAdmin):
    """Tasks are read here; people create, edit and cancel them through the API, whose services
    keep the run, the agent and the sandbox in step."""

    list_display = ["title", "project", "agent", "status", "priority", "pull_request_url", "created_at"]
    list_filter = ["status", "priority"]
    list_select_related = ["project", "agent"]
    search_fields = ["title"]
    readonly_fields = [f.name for f in Task._meta.fields] + ["runs"]


@admin.register(Sandbox)
class SandboxAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "project", "task", "status", "created_at", "destroyed_at"]
    list_filter = ["status", "provider"]
    list_select_related = ["project", "task"]
    readonly_fields = [f.name for f in Sandbox._meta.fields]
    inlines = [GitOperationInline]
