"""The run changelist at millions of runs: no COUNT and no MIN/MAX.

Django's admin counts the filtered rows for its paginator even with ``show_full_result_count =
False``, and ``date_hierarchy`` reads the date's MIN/MAX and its DISTINCT years or months: each a
scan of the whole table. Here a page reads one row more than it shows, to know whether a next page
exists, and a date filter offers recent windows, which the ``(-queued_at, -id)`` index serves.
"""

from datetime import timedelta

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.utils import timezone


class UncountedAdmin:
    """A ModelAdmin mixin: its changelist pages without counting (UncountedChangeList)."""

    def get_changelist(self, request, **kwargs):
        return UncountedChangeList


class UncountedChangeList(ChangeList):
    """Pages of ``list_per_page`` with links to the ones before and the next one, never a count.
    For changelists without ``list_editable`` (the page's rows are a list, not a queryset)."""

    def get_results(self, request):
        per_page = self.list_per_page
        start = (self.page_num - 1) * per_page
        rows = list(self.queryset[start : start + per_page + 1])
        known = start + len(rows)  # at least this many: the next page exists when it is more
        self.paginator = KnownCountPaginator(self.queryset, per_page, count=known)
        self.result_list = rows[:per_page]
        self.result_count = known
        self.full_result_count = None
        self.show_full_result_count = False
        self.show_admin_actions = True
        self.can_show_all = False
        self.multi_page = known > per_page


class KnownCountPaginator(Paginator):
    """A paginator told how many rows there are (at least), so it never counts them."""

    def __init__(self, object_list, per_page, *, count: int):
        super().__init__(object_list, per_page)
        self.__dict__["count"] = count  # Paginator.count is a cached_property


class QueuedWithin(admin.SimpleListFilter):
    """Recent windows of ``queued_at`` instead of a date hierarchy (which reads MIN/MAX)."""

    title = "queued"
    parameter_name = "queued_within"
    field = "queued_at"
    WINDOWS = {
        "1h": ("Last hour", timedelta(hours=1)),
        "24h": ("Last 24 hours", timedelta(days=1)),
        "7d": ("Last 7 days", timedelta(days=7)),
        "30d": ("Last 30 days", timedelta(days=30)),
    }

    def lookups(self, request, model_admin):
        return [(key, label) for key, (label, _) in self.WINDOWS.items()]

    def queryset(self, request, queryset):
        window = self.WINDOWS.get(self.value())
        if window is None:
            return queryset
        return queryset.filter(**{f"{self.field}__gte": timezone.now() - window[1]})
