"""Coverage: repeating shift templates, time off, and who covers what (issue 4, "Coverage").

``Shift`` rows stay the single truth the eligibility engine reads ("on shift" = a Shift covers the
instant). Templates and time off only ever *write* Shift rows:

* ``shift_templates_materialise`` (periodic, hourly) turns every active template into the Shift rows
  of the next ``HORIZON_DAYS`` (90). An occurrence is computed in the template's own time zone and
  stored as UTC,
  so 23:00–07:00 America/Chicago is nine hours across the November change and seven in March, and an
  edge written as 07:00 is exactly 07:00 local. Idempotent: an occurrence that already has a Shift
  row of its template is left alone (its trims and splits by time off stay), and the database refuses
  a second row of the same template and start (two workers at once).
* ``time_off_record`` removes, trims or splits the reader's overlapping Shift rows (the reason goes
  into the remaining pieces' note) and materialisation leaves time off out, so the reader stops being
  eligible with the engine's ordinary "not on shift" reason.

Reads for the operations desk: ``on_shift_now`` (who is on, with scope and RVU load) and
``coverage_grid`` (facility × subspecialty × day: the intervals when nobody eligible is on shift),
both computed with the eligibility engine's own rules over facts loaded once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db import IntegrityError, transaction
from django.db.models import Q

from accounts.audit import audit_bulk_created
from credentialing.eligibility import (
    FacilityFacts,
    ReaderFacts,
    StudyFacts,
    licence_reasons,
    privilege_reasons,
    reader_facts,
    shift_covers,
    subspecialty_reasons,
    verification_reasons,
)
from credentialing.forecast import HORIZON_DAYS as FORECAST_DAYS
from credentialing.forecast import SHORT_NAMES
from credentialing.models import RadiologistProfile, Subspecialty
from facilities.models import Facility
from worklist.models import Shift, ShiftTemplate, TimeOff

# How far ahead templates are materialised: as far as the credentialing forecast looks, so that a
# licence lapsing in 60 days is weighed against the rota as it will be then, not an empty one.
HORIZON_DAYS = FORECAST_DAYS
GRID_DAYS = 7

Interval = tuple[datetime, datetime]


# --- pure interval and calendar helpers ------------------------------------------------------------


def interval_subtract(interval: Interval, holes: Iterable[Interval]) -> list[Interval]:
    """``interval`` minus every hole, as the ordered pieces left (half-open intervals)."""
    pieces = [interval]
    for hole_start, hole_end in sorted(holes):
        rest = []
        for start, end in pieces:
            if hole_end <= start or hole_start >= end:
                rest.append((start, end))
                continue
            if start < hole_start:
                rest.append((start, hole_start))
            if hole_end < end:
                rest.append((hole_end, end))
        pieces = rest
    return pieces


def local_instant(day: date, wall: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of a wall-clock time on a local date. A time skipped by the spring change
    (02:30) is read with the offset before it (fold 0), i.e. it lands at 03:30 daylight time; a
    repeated one (01:30 in November) is its first occurrence."""
    return datetime.combine(day, wall, tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True)
class TemplateFacts:
    weekdays: frozenset[int]
    start_time: time
    end_time: time
    zone: ZoneInfo
    valid_from: date
    valid_until: date | None

    @classmethod
    def of(cls, template: ShiftTemplate) -> TemplateFacts:
        return cls(
            frozenset(template.weekdays),
            template.start_time,
            template.end_time,
            ZoneInfo(template.timezone),
            template.valid_from,
            template.valid_until,
        )


def template_occurrences(template: TemplateFacts, since: datetime, until: datetime) -> list[Interval]:
    """Occurrences (UTC start, UTC end) that overlap ``[since, until)``. Each starts on a listed weekday
    at ``start_time`` local and ends at ``end_time`` local, the next day when the end is not after the
    start — computed separately in the zone, so the length follows the clock change."""
    first = since.astimezone(template.zone).date() - timedelta(days=1)  # an overnight one still running
    last = until.astimezone(template.zone).date()
    occurrences = []
    day = max(first, template.valid_from)
    while day <= last and (template.valid_until is None or day <= template.valid_until):
        if day.weekday() in template.weekdays:
            end_day = day if template.end_time > template.start_time else day + timedelta(days=1)
            start = local_instant(day, template.start_time, template.zone)
            end = local_instant(end_day, template.end_time, template.zone)
            if start < until and end > since and end > start:
                occurrences.append((start, end))
        day += timedelta(days=1)
    return occurrences


# --- writes: materialising templates ----------------------------------------------------------------


def shift_templates_materialise(*, at: datetime, days: int = HORIZON_DAYS) -> int:
    """Create the Shift rows of every active template's occurrences overlapping ``[at, at + days)``,
    minus the reader's time off. Returns how many rows were created; running it again creates none."""
    until = at + timedelta(days=days)
    templates = list(
        ShiftTemplate.objects.filter(active=True, radiologist__is_active=True, valid_from__lte=until.date())
        .filter(Q(valid_until__isnull=True) | Q(valid_until__gte=(at - timedelta(days=2)).date()))
        .select_related("radiologist")
        .prefetch_related("facilities", "subspecialties")
    )
    if not templates:
        return 0
    reader_ids = {t.radiologist_id for t in templates}
    existing: dict[int, list[Interval]] = defaultdict(list)
    for template_id, starts_at, ends_at in Shift.objects.filter(
        template__in=templates, ends_at__gt=at - timedelta(days=2), starts_at__lt=until + timedelta(days=2)
    ).values_list("template_id", "starts_at", "ends_at"):
        existing[template_id].append((starts_at, ends_at))
    away = _time_off_by_reader(reader_ids, at - timedelta(days=2), until + timedelta(days=2))
    created = 0
    for template in templates:
        pieces: list[tuple[Interval, bool]] = []
        for occurrence in template_occurrences(TemplateFacts.of(template), at, until):
            if any(_overlaps(occurrence, shift) for shift in existing[template.pk]):
                continue  # already materialised (perhaps trimmed or split by time off since)
            holes = [(o.starts_at, o.ends_at) for o in away.get(template.radiologist_id, [])]
            pieces += [(piece, piece != occurrence) for piece in interval_subtract(occurrence, holes)]
        created += _shifts_from_template(template, pieces)
    return created


def _overlaps(a: Interval, b: Interval) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _time_off_by_reader(reader_ids: Iterable[int], since: datetime, until: datetime) -> dict[int, list]:
    away: dict[int, list[TimeOff]] = defaultdict(list)
    for off in TimeOff.objects.filter(radiologist_id__in=reader_ids, starts_at__lt=until, ends_at__gt=since):
        away[off.radiologist_id].append(off)
    return away


def _shifts_from_template(template: ShiftTemplate, pieces: list[tuple[Interval, bool]]) -> int:
    """A template's new occurrences (``(piece, trimmed)``) in a handful of statements whatever their
    number: the Shift rows, their scope and their audit rows each in one INSERT (the demo's rota is
    ~650 shifts; one at a time they were ~6 statements each). The rows and the audit trail are the
    same as ``_shift_from_template``'s one by one, which is what runs when another worker
    materialised some of the same occurrences at the same moment (the unique constraint refuses the
    batch): theirs are skipped, the rest created."""
    if not pieces:
        return 0
    facilities = list(template.facilities.all())
    subspecialties = list(template.subspecialties.all())
    try:
        with transaction.atomic():
            shifts = Shift.objects.bulk_create(
                Shift(
                    radiologist=template.radiologist,  # loaded with the template (the audit log names them)
                    starts_at=piece[0],
                    ends_at=piece[1],
                    template=template,
                    note=_shift_note(template, trimmed=trimmed),
                )
                for piece, trimmed in pieces
            )
            Shift.facilities.through.objects.bulk_create(
                Shift.facilities.through(shift_id=shift.pk, facility_id=f.pk)
                for shift in shifts
                for f in facilities
            )
            Shift.subspecialties.through.objects.bulk_create(
                Shift.subspecialties.through(shift_id=shift.pk, subspecialty_id=s.pk)
                for shift in shifts
                for s in subspecialties
            )
            audit_bulk_created(shifts, m2m_added={"facilities": facilities, "subspecialties": subspecialties})
    except IntegrityError:
        return sum(_shift_from_template(template, piece, trimmed=trimmed) for piece, trimmed in pieces)
    return len(shifts)


def _shift_note(template: ShiftTemplate, *, trimmed: bool, note: str = "") -> str:
    return (note or template.name + (" (part: time off)" if trimmed else ""))[:200]


def _shift_from_template(template: ShiftTemplate, piece: Interval, *, trimmed: bool, note: str = "") -> int:
    note = _shift_note(template, trimmed=trimmed, note=note)
    try:
        # A savepoint: another worker materialising the same occurrence makes this INSERT fail on
        # shift_unique_template_start; that is "already done", not an error.
        with transaction.atomic():
            shift = Shift.objects.create(
                radiologist=template.radiologist,  # loaded with the template (the audit log names them)
                starts_at=piece[0],
                ends_at=piece[1],
                template=template,
                note=note,
            )
            # add (not set) to a new row, and only a non-empty scope: a third of the queries per
            # shift, which counts when a rota of hundreds is materialised (the demo loads 400)
            if facilities := list(template.facilities.all()):
                shift.facilities.add(*facilities)
            if subspecialties := list(template.subspecialties.all()):
                shift.subspecialties.add(*subspecialties)
    except IntegrityError:
        return 0
    return 1


@transaction.atomic
def shift_template_apply(*, template_id: int, at: datetime) -> int:
    """After a template was created or edited: its shifts that have not started yet are replaced by
    the template as it now reads (a shift under way is left to finish)."""
    Shift.objects.filter(template_id=template_id, starts_at__gt=at).delete()
    template = (
        ShiftTemplate.objects.select_related("radiologist")
        .prefetch_related("facilities", "subspecialties")
        .get(pk=template_id)
    )
    if not template.active:
        return 0
    away = _time_off_by_reader([template.radiologist_id], at, at + timedelta(days=HORIZON_DAYS + 2))
    existing = list(Shift.objects.filter(template=template).values_list("starts_at", "ends_at"))
    pieces: list[tuple[Interval, bool]] = []
    for occurrence in template_occurrences(TemplateFacts.of(template), at, at + timedelta(days=HORIZON_DAYS)):
        if any(_overlaps(occurrence, shift) for shift in existing):
            continue
        holes = [(o.starts_at, o.ends_at) for o in away.get(template.radiologist_id, [])]
        pieces += [(piece, piece != occurrence) for piece in interval_subtract(occurrence, holes)]
    return _shifts_from_template(template, pieces)


# --- writes: editing templates (the operations rota page; the admin uses shift_template_apply) -------


@dataclass(frozen=True)
class TemplateSaved:
    template: ShiftTemplate
    shifts_created: int  # of the next HORIZON_DAYS, from the template as it now reads
    shifts_removed: int = 0  # not yet started, replaced or dropped


@transaction.atomic
def shift_template_create(
    *,
    radiologist,
    name: str,
    weekdays: Iterable[int],
    start_time: time,
    end_time: time,
    timezone: str,
    valid_from: date,
    valid_until: date | None = None,
    facilities: Iterable[Facility] = (),
    subspecialties: Iterable[Subspecialty] = (),
    at: datetime,
) -> TemplateSaved:
    """A new repeating template, validated like the model says, with its shifts of the next
    ``HORIZON_DAYS`` materialised at once (so the grid and the engine see it before the hourly run).
    Raises ``ValidationError`` naming the field that is wrong."""
    template = ShiftTemplate(radiologist=radiologist)
    return _template_save(
        template,
        name=name,
        weekdays=weekdays,
        start_time=start_time,
        end_time=end_time,
        timezone=timezone,
        valid_from=valid_from,
        valid_until=valid_until,
        facilities=facilities,
        subspecialties=subspecialties,
        active=True,
        at=at,
    )


@transaction.atomic
def shift_template_update(
    *,
    template_id: int,
    name: str,
    weekdays: Iterable[int],
    start_time: time,
    end_time: time,
    timezone: str,
    valid_from: date,
    valid_until: date | None = None,
    facilities: Iterable[Facility] = (),
    subspecialties: Iterable[Subspecialty] = (),
    active: bool = True,
    at: datetime,
) -> TemplateSaved:
    """Edit a template (the reader stays: a rota line belongs to one person). Its shifts that have
    not started are replaced by the template as it now reads; a shift under way is left to finish."""
    # Locked so two operators saving the same template at once apply one after the other.
    template = ShiftTemplate.objects.select_for_update().get(pk=template_id)
    return _template_save(
        template,
        name=name,
        weekdays=weekdays,
        start_time=start_time,
        end_time=end_time,
        timezone=timezone,
        valid_from=valid_from,
        valid_until=valid_until,
        facilities=facilities,
        subspecialties=subspecialties,
        active=active,
        at=at,
    )


def _template_save(
    template: ShiftTemplate, *, facilities, subspecialties, at: datetime, **fields
) -> TemplateSaved:
    for field, value in fields.items():
        setattr(template, field, value)
    template.name = (template.name or "").strip()
    template.weekdays = sorted({int(d) for d in template.weekdays})
    template.full_clean()  # weekdays, zone, valid range: the model's own rules, one message per field
    template.save()
    template.facilities.set(facilities)  # the scope first: the shifts copy it
    template.subspecialties.set(subspecialties)
    removed = Shift.objects.filter(template=template, starts_at__gt=at).count()
    created = shift_template_apply(template_id=template.pk, at=at)
    return TemplateSaved(template, created, removed)


@transaction.atomic
def shift_template_deactivate(*, template_id: int, at: datetime) -> TemplateSaved:
    """Stop a template: its shifts that have not started are removed (one under way is left to
    finish), and materialisation skips it from now on. Kept, not deleted: the shifts it made and
    the audit log point at it, and it can be switched on again by editing it."""
    template = ShiftTemplate.objects.select_for_update().get(pk=template_id)
    removed = Shift.objects.filter(template=template, starts_at__gt=at).count()
    if template.active:
        template.active = False
        template.save(update_fields=["active", "updated_at"])
    shift_template_apply(template_id=template.pk, at=at)
    return TemplateSaved(template, 0, removed)


# --- writes: time off ------------------------------------------------------------------------------


class InvalidTimeOff(ValueError):
    pass


@dataclass(frozen=True)
class ShiftChange:
    """What time off did to one shift: ``after`` is empty when it was removed."""

    label: str  # the template's name or the shift's note
    before: Interval
    after: tuple[Interval, ...]

    @property
    def kind(self) -> str:
        return "removed" if not self.after else "split" if len(self.after) > 1 else "trimmed"


@dataclass(frozen=True)
class TimeOffResult:
    time_off: TimeOff
    removed: int
    trimmed: int
    split: int
    changes: tuple[ShiftChange, ...] = ()


@transaction.atomic
def time_off_record(
    *, radiologist, starts_at: datetime, ends_at: datetime, reason: str, recorded_by=None
) -> TimeOffResult:
    """Record time off and take the reader off every shift it overlaps: a shift inside it is removed,
    one across an edge is trimmed, one around it is split in two. The reason is noted on the pieces
    that remain (and in the audit log of the Shift rows)."""
    reason = (reason or "").strip()
    if not reason:
        raise InvalidTimeOff("Give a reason for the time off.")
    if ends_at <= starts_at:
        raise InvalidTimeOff("Time off must end after it starts.")
    off = TimeOff.objects.create(
        radiologist=radiologist, starts_at=starts_at, ends_at=ends_at, reason=reason, recorded_by=recorded_by
    )
    removed = trimmed = split = 0
    changes = []
    overlapping = (
        # lock the shifts only: the template is joined (nullable) for its name
        Shift.objects.select_for_update(of=("self",))
        .filter(radiologist=radiologist, starts_at__lt=ends_at, ends_at__gt=starts_at)
        .select_related("template")
        .prefetch_related("facilities", "subspecialties")
    )
    for shift in overlapping:
        pieces = interval_subtract((shift.starts_at, shift.ends_at), [(starts_at, ends_at)])
        label = shift.template.name if shift.template else (shift.note or "Shift")
        changes.append(ShiftChange(label, (shift.starts_at, shift.ends_at), tuple(pieces)))
        if not pieces:
            shift.delete()
            removed += 1
            continue
        note = f"{shift.note} (time off: {reason})" if shift.note else f"time off: {reason}"
        shift.starts_at, shift.ends_at = pieces[0]
        shift.note = note[:200]
        shift.save(update_fields=["starts_at", "ends_at", "note"])
        trimmed += len(pieces) == 1
        for start, end in pieces[1:]:
            _copy_shift(shift, start, end)
            split += 1
    return TimeOffResult(off, removed, trimmed, split, tuple(changes))


@transaction.atomic
def time_off_cancel(*, time_off_id: int, at: datetime) -> int:
    """Withdraw time off (recorded in error, or the reader is back): the reader's active templates
    put back, from now to the end of the time off and within the materialising horizon, the parts of
    their occurrences that no other time off and no existing shift covers. Returns how many shifts
    were put back. One-off shifts it removed are not known any more: add them again by hand."""
    off = TimeOff.objects.select_for_update().get(pk=time_off_id)
    since, until = max(off.starts_at, at), min(off.ends_at, at + timedelta(days=HORIZON_DAYS))
    radiologist_id = off.radiologist_id
    off.delete()  # the audit log keeps who recorded it and when it was withdrawn
    if since >= until:
        return 0
    away = [
        (o.starts_at, o.ends_at) for o in _time_off_by_reader([radiologist_id], since, until)[radiologist_id]
    ]
    restored = 0
    templates = (
        ShiftTemplate.objects.filter(radiologist_id=radiologist_id, active=True)
        .select_related("radiologist")
        .prefetch_related("facilities", "subspecialties")
    )
    for template in templates:
        existing = list(
            Shift.objects.filter(template=template, starts_at__lt=until, ends_at__gt=since).values_list(
                "starts_at", "ends_at"
            )
        )
        for start, end in template_occurrences(TemplateFacts.of(template), since, until):
            window = (max(start, since), min(end, until))
            for piece in interval_subtract(window, [*existing, *away]):
                restored += _shift_from_template(
                    template, piece, trimmed=True, note=f"{template.name} (time off withdrawn)"
                )
    return restored


def _copy_shift(shift: Shift, start: datetime, end: datetime) -> Shift:
    copy = Shift.objects.create(
        radiologist_id=shift.radiologist_id,
        starts_at=start,
        ends_at=end,
        template=shift.template,
        note=shift.note,
    )
    copy.facilities.set(shift.facilities.all())
    copy.subspecialties.set(shift.subspecialties.all())
    return copy


# --- reads: the rota as people write it --------------------------------------------------------------

DAY_ABBREVIATIONS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
SUBSPECIALTY_SHORT = {**SHORT_NAMES, Subspecialty.GENERAL: "general/ER"}


def weekdays_label(weekdays: Iterable[int]) -> str:
    """``[0, 1, 2, 3, 4]`` → "Mon–Fri", ``[4, 5, 6, 0]`` → "Fri–Mon", ``[5, 6]`` → "Sat, Sun", all
    seven → "Every day". Runs of three or more days get a dash."""
    days = sorted(set(weekdays))
    if len(days) == 7:
        return "Every day"
    runs: list[list[int]] = []
    for day in days:
        if runs and runs[-1][-1] + 1 == day:
            runs[-1].append(day)
        else:
            runs.append([day])
    # A rota week wraps: Fri, Sat, Sun, Mon is one run, written last ("Wed, Fri–Mon").
    if len(runs) > 1 and runs[0][0] == 0 and runs[-1][-1] == 6 and len(runs[-1]) + len(runs[0]) >= 3:
        runs = [*runs[1:-1], runs[-1] + runs[0]]
    parts = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{DAY_ABBREVIATIONS[run[0]]}–{DAY_ABBREVIATIONS[run[-1]]}")
        else:
            parts += [DAY_ABBREVIATIONS[d] for d in run]
    return ", ".join(parts)


def template_description(template: ShiftTemplate) -> str:
    """ "Mon–Fri 23:00–07:00 America/Chicago, neuro, Lakeshore Medical Center" — the line a rota
    would print. An empty scope reads "all facilities" / "all subspecialties"."""
    subspecialties = [SUBSPECIALTY_SHORT.get(s.code, s.name) for s in template.subspecialties.all()]
    facilities = [f.name for f in template.facilities.all()]
    parts = [
        f"{weekdays_label(template.weekdays)} {template.start_time:%H:%M}–{template.end_time:%H:%M} "
        f"{template.timezone}",
        ", ".join(sorted(subspecialties)) or "all subspecialties",
        ", ".join(sorted(facilities)) or "all facilities",
    ]
    if template.valid_until:
        parts.append(f"until {template.valid_until:%-d %b %Y}")
    return ", ".join(parts)


def rota_templates(*, include_inactive: bool = True) -> list[ShiftTemplate]:
    """Every template, by reader then name, with what its description needs."""
    templates = ShiftTemplate.objects.select_related("radiologist").prefetch_related(
        "facilities", "subspecialties"
    )
    if not include_inactive:
        templates = templates.filter(active=True)
    return sorted(
        templates,
        key=lambda t: (not t.active, str(t.radiologist).lower(), t.name.lower(), t.pk),
    )


def time_off_ahead(at: datetime) -> list[TimeOff]:
    """Time off that has not ended yet, soonest first."""
    return list(
        TimeOff.objects.filter(ends_at__gt=at)
        .select_related("radiologist", "recorded_by")
        .order_by("starts_at")
    )


# --- reads: who is on now -------------------------------------------------------------------------


@dataclass(frozen=True)
class OnShift:
    reader: object
    shift: Shift
    facilities: tuple[str, ...]  # empty: every facility
    subspecialties: tuple[str, ...]  # empty: every subspecialty
    rvu_load: Decimal
    studies_held: int
    zone: ZoneInfo  # the zone the shift is written in: its rota line's, else its first facility's, else UTC


def _shift_zone(shift: Shift) -> ZoneInfo:
    if shift.template_id:
        return ZoneInfo(shift.template.timezone)
    facilities = list(shift.facilities.all())
    return facilities[0].zone if facilities else ZoneInfo("UTC")  # a one-off shift for every facility


def on_shift_now(at: datetime) -> list[OnShift]:
    """Every shift covering ``at`` with its reader, scope and the reader's current RVU load."""
    from worklist.assignment import reader_loads

    shifts = list(
        Shift.objects.filter(starts_at__lte=at, ends_at__gt=at, radiologist__is_active=True)
        .select_related("radiologist", "template")
        .prefetch_related("facilities", "subspecialties")
        .order_by("radiologist__display_name", "radiologist__username", "starts_at")
    )
    loads = reader_loads({s.radiologist_id for s in shifts})
    return [
        OnShift(
            s.radiologist,
            s,
            tuple(f.name for f in s.facilities.all()),
            tuple(x.name for x in s.subspecialties.all()),
            loads.get(s.radiologist_id, (Decimal(0), 0))[0],
            loads.get(s.radiologist_id, (Decimal(0), 0))[1],
            _shift_zone(s),
        )
        for s in shifts
    ]


# --- reads: the coverage grid ------------------------------------------------------------------------


@dataclass(frozen=True)
class GridCell:
    day: date
    start: datetime  # the part of the day the cell covers (today: from now)
    end: datetime
    gaps: tuple[Interval, ...]  # when nobody eligible is on shift
    readers: tuple[str, ...]  # who covers some of it
    zone: ZoneInfo

    @property
    def is_gap(self) -> bool:
        return bool(self.gaps)

    @property
    def gap_labels(self) -> list[str]:
        """The gaps in the facility's wall-clock time, e.g. ``00:00–07:00`` (midnight ending: 24:00)."""
        return [f"{self._clock(start)}–{self._clock(end, ending=True)}" for start, end in self.gaps]

    def _clock(self, at: datetime, *, ending: bool = False) -> str:
        local = at.astimezone(self.zone)
        return "24:00" if ending and local.date() > self.day else local.strftime("%H:%M")

    @property
    def gap_hours(self) -> float:
        return sum((end - start).total_seconds() for start, end in self.gaps) / 3600


@dataclass(frozen=True)
class GridRow:
    facility: Facility
    subspecialty: Subspecialty
    cells: tuple[GridCell, ...]


@dataclass(frozen=True)
class CoverageGrid:
    days: tuple[date, ...]
    rows: tuple[GridRow, ...]


def coverage_grid(
    *, at: datetime, days: int = GRID_DAYS, facility_ids: Iterable[int] | None = None
) -> CoverageGrid:
    """Facility × subspecialty × the next ``days`` facility-local days: for each cell the intervals in
    which no reader is eligible — licence in the state, privileges in force and in scope, subspecialty
    fit (incl. ``accepts_general_readers``) and a shift covering it — from the engine's own rules.

    Licence and privilege rules compare facility-local *dates*, so within one local day they are
    constant: they are asked once per reader, facility, subspecialty and day, and the shifts of the
    readers who pass are unioned (``shift_covers`` decides their facility/subspecialty scope). The
    queries are a fixed handful whatever the number of facilities (facilities, subspecialties, and
    the reader facts of ``reader_facts``)."""
    facilities = Facility.objects.filter(active=True).order_by("name")
    if facility_ids is not None:
        facilities = facilities.filter(pk__in=list(facility_ids))
    facilities = list(facilities)
    subspecialties = list(Subspecialty.objects.order_by("name"))
    horizon = at + timedelta(days=days + 1)
    # only readers with some privilege record at these facilities can cover any of them
    user_ids = (
        RadiologistProfile.objects.filter(user__is_active=True, privileges__facility__in=facilities)
        .values_list("user_id", flat=True)
        .distinct()
    )
    readers = list(reader_facts(list(user_ids), shifts_from=at, shifts_until=horizon).values())
    names = {r.user_id: r.name for r in readers}
    # Candidates per facility: readers with any privilege record there (the rules below decide; this
    # only spares asking 300 readers about a facility where 20 hold privileges).
    at_facility: dict[int, list[ReaderFacts]] = defaultdict(list)
    for reader in readers:
        for facility_id in {p.facility_id for p in reader.privileges}:
            at_facility[facility_id].append(reader)
    rows = []
    first_day = None
    for facility in facilities:
        facts = FacilityFacts.of(facility)
        windows = _day_windows(at, facts.zone, days)
        first_day = first_day or tuple(day for day, _, _ in windows)
        # A reader without a (verified, where required) licence in the state can cover nothing here on
        # that day: drop them early.
        candidates = at_facility.get(facility.pk, [])
        licensed = {
            day: [
                r
                for r in candidates
                if not licence_reasons(r, facts, start) and not verification_reasons(r, facts, start)
            ]
            for day, start, _ in windows
        }
        for sub in subspecialties:
            study = StudyFacts(facts, sub.pk, sub.code, sub.name, None)
            cells = tuple(
                _grid_cell(day, start, end, study, licensed[day], names) for day, start, end in windows
            )
            rows.append(GridRow(facility, sub, cells))
    return CoverageGrid(first_day or (), tuple(rows))


def _day_windows(at: datetime, zone: ZoneInfo, days: int) -> list[tuple[date, datetime, datetime]]:
    today = at.astimezone(zone).date()
    windows = []
    for n in range(days):
        day = today + timedelta(days=n)
        start = local_instant(day, time(0), zone)
        end = local_instant(day + timedelta(days=1), time(0), zone)
        windows.append((day, max(start, at), end))
    return windows


def _grid_cell(
    day: date, start: datetime, end: datetime, study: StudyFacts, readers: list[ReaderFacts], names: dict
) -> GridCell:
    covered: list[Interval] = []
    who = []
    for reader in readers:
        if privilege_reasons(reader, study, start) or subspecialty_reasons(reader, study):
            continue
        pieces = [
            (max(s.starts_at, start), min(s.ends_at, end))
            for s in reader.shifts
            if s.starts_at < end and s.ends_at > start and shift_covers(s, study, max(s.starts_at, start))
        ]
        if pieces:
            covered += pieces
            who.append(names[reader.user_id])
    gaps = tuple(interval_subtract((start, end), covered)) if start < end else ()
    return GridCell(day, start, end, gaps, tuple(sorted(who)), study.facility.zone)


# --- operations told of a gap before it starts ----------------------------------------------------

GAP_NOTICE_AHEAD = timedelta(hours=1)


def coverage_gaps_notify(*, at: datetime, ahead: timedelta = GAP_NOTICE_AHEAD) -> int:
    """Tell operations (worklist.notices: a banner on all their pages until each acknowledges it) of
    every coverage gap — facility × subspecialty, nobody eligible on shift — that *starts* within
    ``ahead``: there is still time to call someone in. A gap already under way was told when it was
    ahead (or is on the coverage page); a gap running on past local midnight is one gap, not two.
    Each gap is told once per user (``about``), whichever sweep or worker finds it first. Returns the
    number of notices written."""
    from django.urls import reverse

    from worklist.models import NoticeKind
    from worklist.notices import operations_notice_send

    told = 0
    for row in coverage_grid(at=at, days=2).rows:
        ends = {end for cell in row.cells for _, end in cell.gaps}
        for cell in row.cells:
            for start, end in cell.gaps:
                if not (at < start <= at + ahead) or start in ends:
                    continue  # under way already, later, or the same gap going on past midnight
                local = start.astimezone(cell.zone)
                until = cell.gap_labels[cell.gaps.index((start, end))].split("–")[1]
                told += len(
                    operations_notice_send(
                        kind=NoticeKind.COVERAGE_GAP,
                        at=at,
                        text=f"{row.subspecialty.name}: nobody eligible {local:%H:%M}–{until} (local)",
                        url=reverse("coverage:grid"),
                        facility_name=row.facility.name,
                        about=f"coverage_gap:{row.facility.pk}:{row.subspecialty.pk}:{start:%Y%m%d%H%M}",
                    )
                )
    return told
