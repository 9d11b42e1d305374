"""Figures for QA dashboards and quarterly reports, as pure functions over plain values."""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile (the p90 is a value that occurred): what a contract audit checks."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def quarter_of(day: date) -> tuple[int, int]:
    return day.year, (day.month - 1) // 3 + 1


def quarter_bounds(year: int, quarter: int, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) of a calendar quarter at the facility (a contract quarter is the hospital's)."""
    if quarter not in (1, 2, 3, 4):
        raise ValueError("quarter is 1–4")
    start = date(year, 3 * quarter - 2, 1)
    end = date(year + 1, 1, 1) if quarter == 4 else date(year, 3 * quarter + 1, 1)
    return datetime.combine(start, time(), zone), datetime.combine(end, time(), zone)


def previous_quarter(day: date) -> tuple[int, int]:
    year, quarter = quarter_of(day)
    return (year - 1, 4) if quarter == 1 else (year, quarter - 1)


def minutes(delta: timedelta) -> float:
    return delta.total_seconds() / 60
