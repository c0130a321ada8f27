import django_filters

from sparkops.api.filters import UtcDateTimeFilter

from .choices import EntryStatus, Outcome, PolicyAction, PolicyKind, Stage
from .models import Policy, PolicyDecision, SpendEntry


class PolicyFilterSet(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=PolicyKind.choices)
    action = django_filters.ChoiceFilter(choices=PolicyAction.choices)
    is_global = django_filters.BooleanFilter(field_name="project", lookup_expr="isnull", help_text="Only global ones.")

    class Meta:
        model = Policy
        fields = ["project", "kind", "action", "enabled", "is_global"]


class PolicyDecisionFilterSet(django_filters.FilterSet):
    outcome = django_filters.ChoiceFilter(choices=Outcome.choices)
    stage = django_filters.ChoiceFilter(choices=Stage.choices)
    since = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = PolicyDecision
        fields = ["project", "policy", "run", "outcome", "stage", "since"]


class SpendEntryFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=EntryStatus.choices)
    since = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = SpendEntry
        fields = ["project", "run", "agent", "workflow", "provider", "model", "status", "since", "until"]
