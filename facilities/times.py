"""The one way a time is written for people (issue 19): in the facility's zone with its
abbreviation (CST/CDT, MST/MDT — the abbreviation changes with DST, so a reader across the change
never has to know the offset), on pages, PDFs and audit rows; ISO 8601 with the offset in CSVs, so a
spreadsheet import is unambiguous. Due times carry the date when it is not today (there), so a
routine study due tomorrow at 14:46 never reads "due 14:46" at 14:50 today."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

UTC_ZONE = ZoneInfo("UTC")
DEFAULT_FORMAT = "%Y-%m-%d %H:%M %Z"
CLOCK_FORMAT = "%H:%M %Z"
DATED_CLOCK_FORMAT = "%a %-d %b %H:%M %Z"


def time_text(value: datetime | None, zone: ZoneInfo | None, fmt: str = DEFAULT_FORMAT) -> str:
    """``value`` in ``zone`` (UTC when the zone is unknown, e.g. an unattributed sender), or "—"."""
    if value is None:
        return "—"
    return value.astimezone(zone or UTC_ZONE).strftime(fmt)


def due_text(value: datetime | None, zone: ZoneInfo, *, at: datetime) -> str:
    """A deadline: "14:46 CST" when it falls on today's date in ``zone``, else "Thu 3 Dec 14:46 CST"."""
    if value is None:
        return ""
    local = value.astimezone(zone)
    same_day = local.date() == at.astimezone(zone).date()
    return local.strftime(CLOCK_FORMAT if same_day else DATED_CLOCK_FORMAT)


def iso_text(value: datetime | None, zone: ZoneInfo | None) -> str:
    """For CSVs: ISO 8601 in the facility's zone with its offset, e.g. 2026-03-08T03:30:00-05:00."""
    if value is None:
        return ""
    return value.astimezone(zone or UTC_ZONE).isoformat(timespec="seconds")
