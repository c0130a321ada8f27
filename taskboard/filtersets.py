import django_filters

from .models import Sandbox, Task


class TaskFilterSet(django_filters.FilterSet):
    agent = django_filters.UUIDFilter(field_name="agent", help_text="Tasks assigned to this agent.")

    class Meta:
        model = Task
        fields = ["project", "status", "priority", "agent"]


class SandboxFilterSet(django_filters.FilterSet):
    class Meta:
        model = Sandbox
        fields = ["project", "status", "provider", "task", "agent"]
