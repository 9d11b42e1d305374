"""Times in the facility's local time with its zone; the UTC instant in the tooltip (DESIGN.md §8)."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from django import template
from django.utils.html import format_html

register = template.Library()


@register.simple_tag
def facility_time(value: datetime | None, facility, fmt: str = "%Y-%m-%d %H:%M %Z"):
    return zone_time(value, facility.zone, fmt)


@register.simple_tag
def zone_time(value: datetime | None, zone: ZoneInfo, fmt: str = "%Y-%m-%d %H:%M %Z"):
    """A time in a given zone (a shift written in its rota's zone), the UTC instant in the tooltip."""
    if value is None:
        return "—"
    local = value.astimezone(zone)
    utc = value.astimezone(UTC)
    return format_html(
        '<time datetime="{}" title="{} UTC">{}</time>',
        value.isoformat(),
        utc.strftime("%Y-%m-%d %H:%M:%S"),
        local.strftime(fmt),
    )
