from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from runs.admin import ReadOnlyInline
from sparkops.admin_scoping import ProjectScopedAdmin
from sparkops.lib.errors import Conflict
from sparkops.roles import Role

from . import services
from .models import Delivery, DeliveryAttempt, Endpoint


class EndpointAdminForm(forms.ModelForm):
    class Meta:
        model = Endpoint
        fields = ["project", "kind", "url", "email_to", "event_types", "description", "enabled"]

    def clean(self):
        cleaned = super().clean()
        probe = Endpoint(**{name: cleaned.get(name) for name in self.Meta.fields if name in cleaned})
        for name, errors in services.endpoint_errors(probe).items():
            for error in errors:
                self.add_error(name if name in self.fields else None, error)
        return cleaned


@admin.register(Endpoint)
class EndpointAdmin(ProjectScopedAdmin):
    # An endpoint sends project data outside, as in the API: admins read and write them.
    read_role = write_role = Role.ADMIN
    form = EndpointAdminForm
    list_display = ["__str__", "project", "kind", "enabled", "consecutive_failures", "disabled_reason", "created_at"]
    list_filter = ["kind", "enabled"]
    list_select_related = ["project"]
    search_fields = ["url", "email_to", "description", "project__slug"]
    autocomplete_fields = ["project"]
    readonly_fields = ["consecutive_failures", "disabled_reason", "previous_secret_expires_at", "created_at"]

    def save_model(self, request, obj, form, change):
        if change:
            services.endpoint_update(endpoint=obj)
            return
        obj.created_by = request.user
        _, secret = services.endpoint_create(endpoint=obj)
        # Shown this once, like the API's create answer; only its ciphertext is stored.
        self.message_user(request, f"Signing secret (copy it now, it is not shown again): {secret}", messages.WARNING)


class AttemptInline(ReadOnlyInline):
    model = DeliveryAttempt
    fields = ["number", "attempted_at", "succeeded", "status_code", "latency_ms", "error", "response_excerpt"]
    readonly_fields = fields


@admin.register(Delivery)
class DeliveryAdmin(ProjectScopedAdmin):
    read_role = write_role = Role.ADMIN
    list_display = ["id", "event_type", "endpoint", "status", "attempts", "last_status_code", "next_attempt_at"]
    list_filter = ["status", "event_type", "endpoint__kind"]
    list_select_related = ["endpoint"]
    search_fields = ["id", "endpoint__url", "project__slug"]
    readonly_fields = [
        "endpoint",
        "project",
        "notice",
        "event_type",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "delivered_at",
        "created_at",
    ]
    fields = readonly_fields
    inlines = [AttemptInline]
    actions = ["redeliver"]
    show_full_result_count = False  # no COUNT(*) over the whole outbox

    def has_add_permission(self, request):
        return False

    @admin.action(description="Redeliver selected deliveries (same webhook-id)", permissions=["change"])
    def redeliver(self, request, queryset):
        sent = 0
        for delivery in queryset.select_related("endpoint"):
            try:
                services.delivery_redeliver(delivery=delivery)
                sent += 1
            except (Conflict, ValidationError) as exc:
                self.message_user(request, f"{delivery.pk}: {exc}", messages.ERROR)
        self.message_user(request, f"Queued {sent} for delivery.")
