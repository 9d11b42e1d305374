"""Charts drawn on the server as SVG from the figures (no chart library, no CDN): a bar per priority
class for p50 and p90 TAT with the contract target as a tick."""

from __future__ import annotations

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

WIDTH, ROW, LABEL = 520, 22, 120


@register.simple_tag
def tat_chart(rows) -> SafeString:
    rows = [r for r in rows if r.reads]
    if not rows:
        return mark_safe("")
    scale_max = max(max(r.p90 or 0, r.target_minutes or 0) for r in rows) or 1
    per_minute = (WIDTH - LABEL - 10) / scale_max

    def bar(index: int, r) -> tuple:
        y = 6 + index * ROW
        tick = LABEL + (r.target_minutes or 0) * per_minute
        # across facilities each read has its own contract target: no single tick to draw
        colour = "#b00" if r.target_minutes else "none"
        # format_html escapes its arguments to strings first: numbers are formatted here
        p90, p50 = f"{(r.p90 or 0) * per_minute:.1f}", f"{(r.p50 or 0) * per_minute:.1f}"
        return (
            y + 12,
            r.label,
            LABEL,
            y + 2,
            p90,
            LABEL,
            y + 5,
            p50,
            f"{tick:.1f}",
            y,
            f"{tick:.1f}",
            y + 16,
            colour,
        )

    body = format_html_join(
        "",
        '<text x="0" y="{}" font-size="9">{}</text>'
        '<rect x="{}" y="{}" width="{}" height="14" fill="#9db7d5"/>'
        '<rect x="{}" y="{}" width="{}" height="8" fill="#1f4e79"/>'
        '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="2"/>',
        (bar(i, r) for i, r in enumerate(rows)),
    )
    height = 12 + len(rows) * ROW
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" role="img" '
        'aria-label="TAT p50 (dark) and p90 (light) per priority; red tick: contract target">{}</svg>',
        WIDTH,
        height + 14,
        body,
    )
