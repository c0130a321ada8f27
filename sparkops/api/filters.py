"""Filters shared by every app's filtersets."""

from datetime import UTC, timedelta

import django_filters
from django import forms
from django_filters.fields import IsoDateTimeField

# Real UTC offsets run from -12:00 to +14:00; PostgreSQL refuses anything past ±15:59.
MAX_UTC_OFFSET = timedelta(hours=14)


class UtcDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time, read in UTC. Refuses offsets no time zone has and instants that fall
    outside the representable range once moved to UTC (``0001-01-01T00:00+05:00``): either would
    otherwise reach the database and fail there, as a 500."""

    def to_python(self, value):
        moment = super().to_python(value)
        if moment is None:
            return None
        offset = moment.utcoffset()
        if offset is not None and abs(offset) > MAX_UTC_OFFSET:
            raise forms.ValidationError("The UTC offset must be between -14:00 and +14:00.", code="invalid")
        try:
            return moment.astimezone(UTC)
        except OverflowError as exc:
            raise forms.ValidationError("Enter a date-time between years 1 and 9999 in UTC.", code="invalid") from exc


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcDateTimeField
