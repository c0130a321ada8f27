import django_filters

from sparkops.api.filters import UtcDateTimeFilter

from .choices import Action, Channel
from .models import AuditEntry


class AuditEntryFilterSet(django_filters.FilterSet):
    project = django_filters.UUIDFilter(field_name="project_id")
    actor = django_filters.NumberFilter(
        field_name="actor_user_id", help_text="A user's id: what they did, keys included."
    )
    api_key = django_filters.UUIDFilter(field_name="actor_api_key_id", help_text="An API key's id.")
    channel = django_filters.ChoiceFilter(choices=Channel.choices)
    action = django_filters.MultipleChoiceFilter(choices=Action.choices)
    object_type = django_filters.CharFilter(help_text='e.g. "schedules.schedule".')
    object_id = django_filters.CharFilter()
    since = UtcDateTimeFilter(field_name="at", lookup_expr="gte")
    until = UtcDateTimeFilter(field_name="at", lookup_expr="lt")

    class Meta:
        model = AuditEntry
        fields = ["project", "actor", "api_key", "channel", "action", "object_type", "object_id", "since", "until"]
