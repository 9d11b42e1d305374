"""The rota as a week or a month calendar (issue 19): each reader's shifts by day, and each
facility's coverage gaps by day from the same engine as the coverage grid. Writes of one-off shifts
go through ``shift_one_off_save`` here (the template services stay in ``worklist.coverage``)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q

from facilities.models import Facility
from worklist.coverage import coverage_grid, local_instant
from worklist.models import Shift

WEEK_DAYS = 7


def week_monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


@dataclass(frozen=True)
class CalendarShift:
    shift: Shift
    label: str  # the template's name, else the note, else "Shift"
    clock: str  # "23:00–07:00" in the calendar's zone ("→" when it ends on a later day)
    scope: str  # the facilities it covers, or "all facilities"

    @property
    def one_off(self) -> bool:
        return self.shift.template_id is None


@dataclass(frozen=True)
class ReaderWeek:
    reader: object
    days: tuple[tuple[date, tuple[CalendarShift, ...]], ...]  # each day of the week with its shifts


@dataclass(frozen=True)
class FacilityDay:
    day: date
    gaps: tuple[str, ...]  # "Neuroradiology 00:00–07:00", facility local time

    @property
    def is_gap(self) -> bool:
        return bool(self.gaps)


@dataclass(frozen=True)
class RotaWeek:
    monday: date
    days: tuple[date, ...]
    zone: ZoneInfo
    readers: tuple[ReaderWeek, ...]
    facilities: tuple[tuple[Facility, tuple[FacilityDay, ...]], ...]


def _clock(shift: Shift, zone: ZoneInfo) -> str:
    start, end = shift.starts_at.astimezone(zone), shift.ends_at.astimezone(zone)
    arrow = "" if end.date() == start.date() or end.time() == time(0) else " (+1)"
    return f"{start:%H:%M}–{end:%H:%M}{arrow}"


def _reader_days(
    first: date, count: int, zone: ZoneInfo, facility: Facility | None
) -> tuple[list, dict[int, list[list[CalendarShift]]]]:
    """Each reader's shifts placed on the local day (in ``zone``) they start, over ``count`` days
    from ``first``: one begun the day before shows on the first day. Only shifts covering
    ``facility`` when one is given (a shift with no facilities covers all)."""
    since = local_instant(first, time(0), zone)
    until = local_instant(first + timedelta(days=count), time(0), zone)
    shifts = Shift.objects.filter(starts_at__lt=until, ends_at__gt=since, radiologist__is_active=True)
    if facility is not None:
        shifts = shifts.filter(Q(facilities=None) | Q(facilities=facility)).distinct()
    shifts = shifts.select_related("radiologist", "template").prefetch_related("facilities")
    by_reader: dict[int, list[list[CalendarShift]]] = {}
    people = {}
    for shift in shifts.order_by("starts_at", "id"):
        day = max(shift.starts_at, since).astimezone(zone).date()
        slots = by_reader.setdefault(shift.radiologist_id, [[] for _ in range(count)])
        people[shift.radiologist_id] = shift.radiologist
        names = [f.name for f in shift.facilities.all()]
        label = shift.template.name if shift.template_id else (shift.note or "Shift")
        slots[(day - first).days].append(
            CalendarShift(shift, label, _clock(shift, zone), ", ".join(names) or "all facilities")
        )
    order = sorted(by_reader, key=lambda uid: str(people[uid]))
    return [people[uid] for uid in order], by_reader


def rota_week(*, monday: date, zone: ZoneInfo, facility: Facility | None = None) -> RotaWeek:
    """The week from ``monday`` (in ``zone``), limited to shifts covering ``facility`` when one is
    given. Gaps come from ``coverage_grid`` run from each facility's own local Monday midnight, so
    a Denver facility's days are Denver days."""
    days = tuple(monday + timedelta(days=n) for n in range(WEEK_DAYS))
    people, by_reader = _reader_days(monday, WEEK_DAYS, zone, facility)
    readers = tuple(
        ReaderWeek(p, tuple(zip(days, (tuple(day) for day in by_reader[p.pk]), strict=True))) for p in people
    )
    return RotaWeek(monday, days, zone, readers, _facility_gaps(monday, WEEK_DAYS, facility))


# --- the month view ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MonthDay:
    day: date
    in_month: bool  # the leading and trailing days of the first and last weeks are not
    on_shift: tuple[str, ...]  # "Dr Nora Neuro 23:00–07:00 (+1)", in the calendar's zone
    gaps: tuple[tuple[Facility, tuple[str, ...]], ...]  # per facility, its own local time

    @property
    def is_gap(self) -> bool:
        return bool(self.gaps)


@dataclass(frozen=True)
class RotaMonth:
    first: date  # the 1st of the month
    zone: ZoneInfo
    weeks: tuple[tuple[MonthDay, ...], ...]  # Monday to Sunday, the whole weeks the month touches
    facilities: tuple[Facility, ...]

    @property
    def gap_days(self) -> int:
        return sum(1 for week in self.weeks for d in week if d.in_month and d.is_gap)


def month_first(day: date) -> date:
    return day.replace(day=1)


def month_after(first: date) -> date:
    return (first + timedelta(days=32)).replace(day=1)


def rota_month(*, first: date, zone: ZoneInfo, facility: Facility | None = None) -> RotaMonth:
    """The month of ``first`` as whole Monday–Sunday weeks: who is on shift each day (in ``zone``)
    and, for each facility (or the one given), the hours of that facility-local day when no
    eligible reader is on shift — the same ``coverage_grid`` rules as the week view."""
    start = week_monday(first)
    count = (week_monday(month_after(first) - timedelta(days=1)) - start).days + WEEK_DAYS
    people, by_reader = _reader_days(start, count, zone, facility)
    gaps = _facility_gaps(start, count, facility)
    days = []
    for n in range(count):
        on_shift = tuple(f"{p} {item.clock}" for p in people for item in by_reader[p.pk][n])
        open_gaps = tuple((f, cells[n].gaps) for f, cells in gaps if cells[n].is_gap)
        day = start + timedelta(days=n)
        days.append(MonthDay(day, day.month == first.month, on_shift, open_gaps))
    weeks = tuple(tuple(days[n : n + WEEK_DAYS]) for n in range(0, count, WEEK_DAYS))
    return RotaMonth(first, zone, weeks, tuple(f for f, _ in gaps))


def _facility_gaps(first: date, count: int, facility: Facility | None) -> tuple:
    facilities = [facility] if facility else list(Facility.objects.filter(active=True).order_by("name"))
    by_zone: dict[str, list[int]] = defaultdict(list)
    for f in facilities:
        by_zone[f.timezone].append(f.pk)
    gaps: dict[int, list[list[str]]] = {f.pk: [[] for _ in range(count)] for f in facilities}
    for zone_name, ids in by_zone.items():
        start = local_instant(first, time(0), ZoneInfo(zone_name))
        for row in coverage_grid(at=start, days=count, facility_ids=ids).rows:
            for n, cell in enumerate(row.cells):
                gaps[row.facility.pk][n] += [f"{row.subspecialty.name} {label}" for label in cell.gap_labels]
    return tuple(
        (
            f,
            tuple(FacilityDay(first + timedelta(days=n), tuple(g)) for n, g in enumerate(gaps[f.pk])),
        )
        for f in facilities
    )


@transaction.atomic
def shift_one_off_save(
    *,
    radiologist,
    starts_at: datetime,
    ends_at: datetime,
    facilities,
    subspecialties,
    note: str = "",
    shift_id: int | None = None,
) -> Shift:
    """Create a one-off shift, or change one (``shift_id``). A shift made from a repeating template
    is not changed here: the next materialisation would put its occurrence back beside the edit —
    change the template (or record time off) instead."""
    if shift_id is None:
        shift = Shift(radiologist=radiologist)
    else:
        shift = Shift.objects.select_for_update().get(pk=shift_id)
        if shift.template_id is not None:
            raise ValidationError("This shift comes from a repeating template: edit the template instead.")
        shift.radiologist = radiologist
    shift.starts_at, shift.ends_at, shift.note = starts_at, ends_at, (note or "").strip()
    if ends_at <= starts_at:
        raise ValidationError({"end_time": "The shift must end after it starts."})
    shift.full_clean(exclude=["facilities", "subspecialties"])
    shift.save()
    shift.facilities.set(facilities)
    shift.subspecialties.set(subspecialties)
    return shift
