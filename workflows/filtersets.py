import django_filters

from .models import Workflow


class WorkflowFilterSet(django_filters.FilterSet):
    """?project=, ?active=, ?slug=; ?search= (name, slug, description) is the view's SearchFilter."""

    project = django_filters.UUIDFilter(field_name="project_id", help_text="Id of the project.")
    slug = django_filters.CharFilter(help_text='Exact slug, e.g. "triage-tickets".')

    class Meta:
        model = Workflow
        fields = ["project", "active", "slug"]
