from django.contrib import admin

from sparkops.admin_scoping import ProjectScopedAdmin

from .models import GitOperation, Sandbox, Task


class GitOperationInline(admin.TabularInline):
    model = GitOperation
    fk_name = "sandbox"
    extra = 0
    fields = ["kind", "status", "commit_sha", "error", "started_at", "finished_at"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Task)
class TaskAdmin(ProjectScopedAdmin):
    """Tasks are read here; people create, edit and cancel them through the API, whose services
    keep the run, the agent and the sandbox in step."""

    list_display = ["title", "project", "agent", "status", "priority", "pull_request_url", "created_at"]
    list_filter = ["status", "priority"]
    list_select_related = ["project", "agent"]
    search_fields = ["title"]
    readonly_fields = [f.name for f in Task._meta.fields] + ["runs"]
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Sandbox)
class SandboxAdmin(ProjectScopedAdmin):
    list_display = ["__str__", "project", "task", "status", "created_at", "destroyed_at"]
    list_filter = ["status", "provider"]
    list_select_related = ["project", "task"]
    readonly_fields = [f.name for f in Sandbox._meta.fields]
    inlines = [GitOperationInline]
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
