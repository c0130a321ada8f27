"""``?ordering=`` that refuses what it cannot honour, and orders pages stably."""

from rest_framework import filters
from rest_framework.exceptions import ValidationError


class StrictOrderingFilter(filters.OrderingFilter):
    """DRF's OrderingFilter drops unknown fields silently, so a typo returns the default order
    and looks like a bug in the data. Here an unknown field is a 400 naming the allowed ones,
    and the primary key breaks ties so equal values never move between pages."""

    def remove_invalid_fields(self, queryset, fields, view, request):
        valid = [item[0] for item in self.get_valid_fields(queryset, view, {"request": request})]
        terms = [term for term in fields if term]
        unknown = [term for term in terms if term.removeprefix("-") not in valid]
        if unknown:
            allowed = ", ".join(valid) or "none"
            message = f"Cannot order by {', '.join(unknown)}; allowed: {allowed} (prefix - for descending)."
            raise ValidationError({self.ordering_param: [message]})
        return terms

    def get_ordering(self, request, queryset, view):
        ordering = super().get_ordering(request, queryset, view)
        if not request.query_params.get(self.ordering_param) or not ordering:
            return ordering  # the view's default, which is already total
        if {term.removeprefix("-") for term in ordering} & {"pk", "id"}:
            return ordering
        return [*ordering, "-pk" if ordering[-1].startswith("-") else "pk"]
