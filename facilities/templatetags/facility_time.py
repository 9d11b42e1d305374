"""Times in the facility's local time with its zone; the UTC instant in the tooltip (DESIGN.md §8)."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from django import template
from django.utils import timezone
from django.utils.html import format_html

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
    utc = value.astimezone(UTC)
    return format_html(
        '<time datetime="{}" title="{} UTC">{}</time>',
        value.isoformat(),
        utc.strftime("%Y-%m-%d %H:%M:%S"),
        time_text(value, zone, fmt),
    )


@register.simple_tag
def facility_due(value: datetime | None, facility):
    """A deadline at the facility: its clock time, with the date when that is not today there."""
    if value is None:
        return "—"
    return format_html(
        '<time datetime="{}" title="{} UTC">{}</time>',
        value.isoformat(),
        value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        due_text(value, facility.zone, at=timezone.now()),
    )
