"""Charts drawn on the server as SVG from the figures (no chart library, no CDN): a bar per priority
class for p50 and p90 TAT with the contract target as a tick. And the dashboard's one number format
(issue 19): every rate a percentage, every Wilson interval in percent too ("20.7 %", "8.1–42.3 %").

The SVG's labels are ``currentColor`` and its shapes carry classes, so on a page they follow the
theme (app.css ``svg.chart``); the presentation attributes stay as the colours of the PDF, which
has no theme."""

from __future__ import annotations

from django import template
from django.template.defaultfilters import floatformat
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

WIDTH, ROW, LABEL = 520, 22, 120


def _percent_number(fraction: float) -> str:
    """One decimal, dropped when it is .0: 0.207 → "20.7", 1.0 → "100"."""
    return floatformat(fraction * 100, -1)


@register.filter
def percent(fraction: float | None) -> str:
    """A rate (0–1) as a percentage; None (nothing to divide by) as a dash."""
    return "—" if fraction is None else f"{_percent_number(fraction)} %"


@register.filter
def share(part: int | None, whole: int | None) -> str:
    """``part`` of ``whole`` as a percentage: ``{{ r.within_sla|share:r.reads }}``."""
    return percent(part / whole) if whole else "—"


@register.filter
def percent_interval(interval: tuple[float, float] | None) -> str:
    """A (low, high) interval of rates as "8.1–42.3 %"."""
    if not interval:
        return "—"
    low, high = interval
    return f"{_percent_number(low)}–{_percent_number(high)} %"


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
        '<text x="0" y="{}" font-size="9" fill="currentColor">{}</text>'
        '<rect class="p90" x="{}" y="{}" width="{}" height="14" fill="#9db7d5"/>'
        '<rect class="p50" x="{}" y="{}" width="{}" height="8" fill="#1f4e79"/>'
        '<line class="target" x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="2"/>',
        (bar(i, r) for i, r in enumerate(rows)),
    )
    height = 12 + len(rows) * ROW
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{}" height="{}" role="img" '
        'aria-label="TAT p50 (dark) and p90 (light) per priority; red tick: contract target">{}</svg>',
        WIDTH,
        height + 14,
        body,
    )
