import django_filters

from .choices import DeliveryStatus, EndpointKind
from .models import Delivery, Endpoint


class EndpointFilterSet(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=EndpointKind.choices)

    class Meta:
        model = Endpoint
        fields = ["project", "kind", "enabled"]


class DeliveryFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=DeliveryStatus.choices)
    event_type = django_filters.CharFilter(help_text="e.g. run.failed")

    class Meta:
        model = Delivery
        fields = ["project", "endpoint", "status", "event_type"]
