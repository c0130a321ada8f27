import django_filters

from .models import Schedule


class ScheduleFilterSet(django_filters.FilterSet):
    class Meta:
        model = Schedule
        fields = ["project", "workflow", "enabled"]
