from rest_framework import serializers

from notices.choices import NoticeType
from sparkops.api.viewsets import ProjectField

from ..choices import EndpointKind
from ..models import Delivery, DeliveryAttempt, Endpoint

MAX_OVERLAP_HOURS = 168


class EndpointSerializer(serializers.ModelSerializer):
    project = ProjectField()
    kind = serializers.ChoiceField(choices=EndpointKind.choices, default=EndpointKind.WEBHOOK)
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=NoticeType.choices),
        required=False,
        max_length=len(NoticeType.values),
        help_text='Event types subscribed to, e.g. ["run.failed", "step.waiting_approval"]; empty: all.',
    )

    class Meta:
        model = Endpoint
        fields = [
            "id",
            "project",
            "kind",
            "url",
            "email_to",
            "event_types",
            "description",
            "enabled",
            "disabled_reason",
            "consecutive_failures",
            "previous_secret_expires_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["disabled_reason", "consecutive_failures", "previous_secret_expires_at"]


class EndpointCreatedSerializer(EndpointSerializer):
    secret = serializers.CharField(read_only=True, help_text="The signing secret (whsec_…): shown this once.")

    class Meta(EndpointSerializer.Meta):
        fields = [*EndpointSerializer.Meta.fields, "secret"]


class RotateSecretSerializer(serializers.Serializer):
    overlap_hours = serializers.IntegerField(
        min_value=0,
        max_value=MAX_OVERLAP_HOURS,
        default=24,
        help_text="How long the old secret also signs, e.g. 24; 0 retires it at once.",
    )


class RotatedSecretSerializer(serializers.Serializer):
    secret = serializers.CharField(help_text="The new signing secret: shown this once.")
    previous_secret_expires_at = serializers.DateTimeField(allow_null=True)


class DeliveryAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeliveryAttempt
        fields = ["number", "attempted_at", "succeeded", "status_code", "latency_ms", "response_excerpt", "error"]


class DeliverySerializer(serializers.ModelSerializer):
    attempt_log = DeliveryAttemptSerializer(many=True, read_only=True)

    class Meta:
        model = Delivery
        fields = [
            "id",
            "project",
            "endpoint",
            "notice",
            "event_type",
            "status",
            "attempts",
            "next_attempt_at",
            "last_status_code",
            "last_error",
            "delivered_at",
            "created_at",
            "attempt_log",
        ]
        read_only_fields = fields
