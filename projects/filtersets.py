import django_filters

from .choices import Role
from .models import Membership, Project


class ProjectFilterSet(django_filters.FilterSet):
    class Meta:
        model = Project
        fields = ["archived", "slug"]


class MembershipFilterSet(django_filters.FilterSet):
    role = django_filters.ChoiceFilter(choices=Role.choices)
    user = django_filters.NumberFilter(field_name="user_id")

    class Meta:
        model = Membership
        fields = ["project", "role", "user"]
