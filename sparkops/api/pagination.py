"""Pagination with a capped page size."""

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
