from rest_framework import serializers

from ..models import AuditEntry


class AuditEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEntry
        fields = [
            "id",
            "at",
            "project",
            "actor_user",
            "actor_api_key",
            "actor_label",
            "channel",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "changes",
            "client_address",
            "request_id",
        ]
        read_only_fields = fields
