import django_filters

from . import providers
from .choices import AgentStatus, RiskClass, ToolKind
from .models import Agent, ModelPrice, ProviderCredential, Tool


class AgentFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=AgentStatus.choices)
    provider = django_filters.CharFilter()
    model = django_filters.CharFilter()
    tool = django_filters.UUIDFilter(field_name="tools", help_text="Agents that may call this tool.")

    class Meta:
        model = Agent
        fields = ["project", "status", "provider", "model", "slug", "tool"]


class ToolFilterSet(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=ToolKind.choices)
    risk_class = django_filters.ChoiceFilter(choices=RiskClass.choices)

    class Meta:
        model = Tool
        fields = ["project", "kind", "risk_class", "enabled", "requires_approval", "slug"]


class CredentialFilterSet(django_filters.FilterSet):
    provider = django_filters.ChoiceFilter(choices=providers.choices)

    class Meta:
        model = ProviderCredential
        fields = ["project", "provider"]


class ModelPriceFilterSet(django_filters.FilterSet):
    current = django_filters.BooleanFilter(method="filter_current", help_text="Only the price in force now per model.")

    class Meta:
        model = ModelPrice
        fields = ["provider", "model", "current"]

    def filter_current(self, queryset, name, value):
        from .selectors import current_prices

        return queryset.filter(pk__in=current_prices().values("pk")) if value else queryset
