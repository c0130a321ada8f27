import django_filters

from sparkops.api.filters import UtcDateTimeFilter

from .choices import RunStatus, Trigger
from .models import Run


class RunFilterSet(django_filters.FilterSet):
    # No DISTINCT (django-filter's default for multiple choices): a run has one status, and DISTINCT over
    # every column makes PostgreSQL sort all matching runs instead of reading the newest from an index.
    status = django_filters.MultipleChoiceFilter(choices=RunStatus.choices, distinct=False)
    trigger = django_filters.ChoiceFilter(choices=Trigger.choices)
    queued_after = UtcDateTimeFilter(field_name="queued_at", lookup_expr="gte")
    queued_before = UtcDateTimeFilter(field_name="queued_at", lookup_expr="lt")
    agent = django_filters.UUIDFilter(field_name="task_agent", help_text="Tasks of this agent.")

    class Meta:
        model = Run
        fields = [
            "project",
            "workflow",
            "workflow_version",
            "status",
            "trigger",
            "parent",
            "queued_after",
            "queued_before",
            "agent",
        ]
