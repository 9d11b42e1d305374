"""Times in the facility's local time with its zone; the UTC instant in the tooltip (DESIGN.md §8)."""

from datetime import UTC, datetime

from django import template
from django.utils.html import format_html

register = template.Library()


@register.simple_tag
def facility_time(value: datetime | None, facility, fmt: str = "%Y-%m-%d %H:%M %Z"):
    if value is None:
        return "—"
    local = value.astimezone(facility.zone)
    utc = value.astimezone(UTC)
    return format_html(
        '<time datetime="{}" title="{} UTC">{}</time>',
        value.isoformat(),
        utc.strftime("%Y-%m-%d %H:%M:%S"),
        local.strftime(fmt),
    )
