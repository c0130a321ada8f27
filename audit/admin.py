from django.contrib import admin

from sparkops.admin_scoping import ReadOnlyAdmin
from sparkops.roles import Role

from .models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """Read-only: the trail is written by the services, never by hand. Staff read the entries of
    projects they administer, as GET /audit answers project admins."""

    read_role = write_role = Role.ADMIN

    list_display = ["at", "actor_label", "channel", "action", "object_type", "object_repr", "project", "client_address"]
    list_filter = ["channel", "action", "object_type"]
    list_select_related = ["project"]
    search_fields = ["object_repr", "actor_label", "object_id", "request_id"]
    readonly_fields = [f.name for f in AuditEntry._meta.fields]
