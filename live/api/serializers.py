from django.conf import settings
from rest_framework import serializers

from ..cursor import BadPosition, Position
from ..selectors import EVENT_TYPES, EVENTS, NOTICE_TYPES, NOTICES

BAD_POSITION = "Not a stream position: send back an `id:` the stream gave you, e.g. 1042-1038_1040.77."
SOURCE_LOGS = {"run": EVENTS, "notice": NOTICES}


class CommaList(serializers.ListField):
    """``?x=a,b`` and ``?x=a&x=b`` alike."""

    def to_internal_value(self, data):
        items = data if isinstance(data, list) else [data]
        return super().to_internal_value([part.strip() for item in items for part in str(item).split(",") if part])


class StreamQuerySerializer(serializers.Serializer):
    project = CommaList(
        child=serializers.UUIDField(),
        required=False,
        max_length=100,
        help_text="Only these projects (repeat or comma-separate); default: every project you may see.",
    )
    run = serializers.UUIDField(required=False, help_text="Only this run's events and notices.")
    types = CommaList(
        child=serializers.ChoiceField(choices=sorted(EVENT_TYPES | NOTICE_TYPES)),
        required=False,
        help_text="Only these event types, comma-separated, e.g. run.failed,step.waiting_approval.",
    )
    source = serializers.ChoiceField(
        choices=sorted(SOURCE_LOGS),
        required=False,
        help_text="Only runs' own event logs (run) or only notices (notice); default: both.",
    )
    after = serializers.CharField(
        required=False,
        max_length=8192,
        help_text="Resume after this message id, e.g. 1042.77 (a Last-Event-ID header wins); default: from now.",
    )
    timeout = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=settings.SPARKOPS_SSE_MAX_SECONDS,
        help_text="End the stream after this many seconds; default and most: SPARKOPS_SSE_MAX_SECONDS.",
    )
    token = serializers.CharField(required=False, help_text="A stream token from POST /api/v1/sse/token.")

    def validate_after(self, value: str) -> Position:
        try:
            return Position.decode(value)
        except (BadPosition, ValueError):
            raise serializers.ValidationError(BAD_POSITION) from None


class StreamTokenRequestSerializer(serializers.Serializer):
    projects = serializers.ListField(
        child=serializers.UUIDField(),
        required=False,
        max_length=100,
        help_text="Limit the token to these projects; default: every project you may see when the stream opens.",
    )


class StreamTokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Open the stream with ?token=<this>.")
    expires_at = serializers.DateTimeField(help_text="Open the stream before this; an open stream is not cut.")
    projects = serializers.ListField(child=serializers.UUIDField(), allow_null=True)
