"""The API's two paginations, both with a capped page size: page numbers by default, and one
cursor pagination for the tables that grow without bound (runs, decisions, the spend ledger)."""

from django.conf import settings
from rest_framework import pagination
from rest_framework.exceptions import ValidationError


class PageNumberPagination(pagination.PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = settings.SPARKOPS_MAX_PAGE_SIZE

    def paginate_queryset(self, queryset, request, view=None):
        # DRF answers a page that is not a number with 404 "Invalid page"; it is bad input, so
        # 400 on the field. A number past the last page stays a 404: that page does not exist.
        raw = request.query_params.get(self.page_query_param)
        if raw is not None and raw not in self.last_page_strings and not (raw.isdigit() and int(raw) > 0):
            raise ValidationError({self.page_query_param: ["A whole number from 1, or last."]})
        return super().paginate_queryset(queryset, request, view)


class CursorPagination(pagination.CursorPagination):
    """Stays fast at millions of rows: no COUNT, no OFFSET. Newest first by ``created_at``; a
    view whose rows are dated otherwise names its order in ``ordering`` (which the ordering
    filter, and so this pagination, takes as the default), e.g. ``("-queued_at", "-id")``."""

    ordering = ("-created_at", "-id")
    page_size_query_param = "page_size"
    max_page_size = settings.SPARKOPS_MAX_PAGE_SIZE
