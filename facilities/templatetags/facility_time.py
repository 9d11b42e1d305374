"""Times in the facility's local time with its zone; the UTC instant in the tooltip (DESIGN.md §8)."""

from datetime import UTC, datetime
from html import escape
from zoneinfo import ZoneInfo

from django import template
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from facilities.times import DEFAULT_FORMAT, due_text, time_text

register = template.Library()


@register.simple_tag
def facility_time(value: datetime | None, facility, fmt: str = DEFAULT_FORMAT):
    return zone_time(value, facility.zone if facility is not None else None, fmt)


@register.simple_tag
def zone_time(value: datetime | None, zone: ZoneInfo | None, fmt: str = DEFAULT_FORMAT):
    """A time in a given zone (a shift written in its rota's zone), the UTC instant in the tooltip."""
    if value is None:
        return "—"
    return _time_html(value, time_text(value, zone, fmt))


@register.simple_tag
def facility_due(value: datetime | None, facility):
    """A deadline at the facility: its clock time, with the date when that is not today there."""
    return zone_due(value, facility.zone)


def zone_due(value: datetime | None, zone: ZoneInfo):
    """``facility_due`` given the facility's zone (rows built from plain values)."""
    if value is None:
        return "—"
    return _time_html(value, due_text(value, zone, at=timezone.now()))


def time_html(value: datetime, text: str) -> SafeString:
    """``<time>`` of an instant with the text already worked out (a worklist row has its due text)."""
    return _time_html(value, text)


def _time_html(value: datetime, text: str) -> SafeString:
    # format_html's lazy-aware escaping, by hand: a worklist page writes two of these per row
    utc = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return mark_safe(f'<time datetime="{escape(value.isoformat())}" title="{utc} UTC">{escape(text)}</time>')  # noqa: S308
