"""Pagination with a capped page size."""

from django.conf import settings
from rest_framework import pagination


class PageNumberPagination(pagination.PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = settings.SPARKOPS_MAX_PAGE_SIZE
