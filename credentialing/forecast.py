"""Coverage forecast: which facility × subspecialty × shift slots lose every eligible reader in the
next 90 days if the licences and privileges that expire are not renewed.

Method: the eligibility rules run twice over the same facts — once as recorded, once as if every
credential expiring in the window were renewed — at each instant coverage can change (each shift
start in the window, and each credential's lapse at local midnight). A slot is a gap when the renewed
world has an eligible reader on shift and the recorded one has none; the credentials that made the
difference are its causes. The rota's repeating templates are materialised as Shift rows as far
ahead as this horizon (``worklist.coverage.HORIZON_DAYS``), so a lapse in 60 days is weighed against
the rota as it will be then; one-off shifts count as far as they are entered."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from credentialing.eligibility import (
    FacilityFacts,
    ReaderFacts,
    StudyFacts,
    assess_facts,
    licence_in_force,
    local_day,
    privilege_in_force,
    reader_facts,
    renewed,
)
from credentialing.models import GRANTED_PRIVILEGE_STATUSES, LicenceStatus, RadiologistProfile, Subspecialty
from facilities.models import Facility

HORIZON_DAYS = 90

SHORT_NAMES = {
    Subspecialty.NEURO: "neuro",
    Subspecialty.MSK: "MSK",
    Subspecialty.BODY: "body",
    Subspecialty.CHEST: "chest",
    Subspecialty.PEDIATRIC: "paediatric",
    Subspecialty.BREAST: "breast",
    Subspecialty.NUCLEAR: "nuclear medicine",
}


@dataclass(frozen=True, order=True)
class Lapse:
    lapses_on: date  # the first day it is no longer valid (the day after its expiry date)
    reader_name: str
    what: str  # "WI licence" | "privileges at Lakeview Outpatient Imaging"

    @property
    def sentence(self) -> str:
        verb = "lapse" if self.what.startswith("privileges") else "lapses"
        return f"{self.reader_name}'s {self.what} {verb} on {self.lapses_on.day} {self.lapses_on:%b %Y}"


@dataclass(frozen=True)
class CoverageGap:
    facility: FacilityFacts
    subspecialties: tuple[Subspecialty, ...]  # General / ER alone means "no reader at all"
    starts_at: datetime  # the first uncovered instant
    slots: tuple[str, ...]  # "weekend nights", "weekday evenings" …
    lapses: tuple[Lapse, ...]

    @property
    def sentence(self) -> str:
        shorts = [SHORT_NAMES[s.code] for s in self.subspecialties if s.code in SHORT_NAMES]
        reader = f"{_join(tuple(shorts), 'or')} reader" if shorts else "reader"
        causes = " and ".join(lapse.sentence for lapse in self.lapses)
        return f"{causes}: {self.facility.name} has no {reader} on {_join(self.slots)} from then"


def _join(words: tuple[str, ...], last: str = "and") -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {last} {words[-1]}"


def slot_label(at: datetime, facility: FacilityFacts) -> str:
    """Day part in the facility's local time: days 06–14, evenings 14–19, nights 19–06;
    weekend = Saturday and Sunday."""
    local = at.astimezone(facility.zone)
    part = "days" if 6 <= local.hour < 14 else "evenings" if 14 <= local.hour < 19 else "nights"
    return f"{'weekend' if local.weekday() >= 5 else 'weekday'} {part}"


def coverage_forecast(at: datetime, *, days: int = HORIZON_DAYS) -> list[CoverageGap]:
    until = at + timedelta(days=days)
    user_ids = RadiologistProfile.objects.filter(user__is_active=True).values_list("user_id", flat=True)
    readers = reader_facts(user_ids, shifts_from=at, shifts_until=until)
    since, through = at.date() - timedelta(days=1), until.date() + timedelta(days=1)
    window = (since, through)
    if not any(_expiring(r, window) for r in readers.values()):
        return []
    facilities = [FacilityFacts.of(f) for f in Facility.objects.filter(active=True).order_by("name")]
    subspecialties = list(Subspecialty.objects.order_by("name"))
    as_renewed = {uid: renewed(r, since=since, through=through) for uid, r in readers.items()}
    points = _instants(readers.values(), facilities, at, until, window)
    found: dict[tuple, list[datetime]] = defaultdict(list)
    for t in points:
        on_shift = [r for r in readers.values() if any(s.starts_at <= t < s.ends_at for s in r.shifts)]
        if not any(_lapses_at(r, f, t, window) for r in on_shift for f in facilities):
            continue  # nobody on shift has lost anything yet: no gap can start here
        for facility in facilities:
            general_gap = None
            for sub in sorted(subspecialties, key=lambda s: s.code != Subspecialty.GENERAL):
                causes = _gap_causes(on_shift, as_renewed, facility, sub, t, window)
                if causes is None or (general_gap is not None and causes <= general_gap):
                    continue  # covered, or already said: "has no reader" at all
                if sub.code == Subspecialty.GENERAL:
                    general_gap = causes
                found[(facility, sub, causes)].append(t)
    # One sentence per facility, causes, first instant and slots: the subspecialties it leaves bare.
    grouped: dict[tuple, list[Subspecialty]] = defaultdict(list)
    for (facility, sub, causes), ts in found.items():
        slots = tuple(sorted({slot_label(t, facility) for t in ts}))
        grouped[(facility, causes, min(ts), slots)].append(sub)
    gaps = [
        CoverageGap(facility, tuple(sorted(subs, key=lambda s: s.name)), start, slots, tuple(sorted(causes)))
        for (facility, causes, start, slots), subs in grouped.items()
    ]
    return sorted(gaps, key=lambda g: (g.starts_at, g.facility.name))


Window = tuple[date, date]  # expiry dates the forecast treats as "renewed if someone acts"


def _due(expires_on: date | None, window: Window) -> bool:
    return expires_on is not None and window[0] <= expires_on <= window[1]


def _expiring(reader: ReaderFacts, window: Window) -> bool:
    return any(
        lic.status == LicenceStatus.ACTIVE and _due(lic.expires_on, window) for lic in reader.licences
    ) or any(p.status in GRANTED_PRIVILEGE_STATUSES and _due(p.expires_on, window) for p in reader.privileges)


def _instants(readers, facilities, at: datetime, until: datetime, window: Window) -> list[datetime]:
    """Where coverage can change: shift starts, and local midnights at which a credential lapses."""
    points = {max(s.starts_at, at) for r in readers for s in r.shifts if s.starts_at < until}
    for r in readers:
        expiries = {lic.expires_on for lic in r.licences if _due(lic.expires_on, window)}
        expiries |= {p.expires_on for p in r.privileges if _due(p.expires_on, window)}
        for expiry in expiries:
            for facility in facilities:
                lapse = datetime.combine(expiry + timedelta(days=1), time.min, tzinfo=facility.zone)
                if at <= lapse < until and any(s.starts_at <= lapse < s.ends_at for s in r.shifts):
                    points.add(lapse)
    return sorted(points)


def _lapses_at(reader: ReaderFacts, facility: FacilityFacts, t: datetime, window: Window) -> frozenset[Lapse]:
    """The reader's credentials for this facility, due in the window, that have lapsed by ``t``
    (they were in force on their last day)."""
    day = local_day(t, facility.zone)
    lapses = set()
    for lic in reader.licences:
        lapsed = lic.state == facility.state and _due(lic.expires_on, window) and lic.expires_on < day
        if lapsed and licence_in_force(lic, lic.expires_on):
            lapses.add(Lapse(lic.expires_on + timedelta(days=1), reader.name, f"{lic.state} licence"))
    for p in reader.privileges:
        lapsed = p.facility_id == facility.id and _due(p.expires_on, window) and p.expires_on < day
        if lapsed and privilege_in_force(p, p.expires_on):
            lapses.add(Lapse(p.expires_on + timedelta(days=1), reader.name, f"privileges at {facility.name}"))
    return frozenset(lapses)


def _gap_causes(on_shift, as_renewed, facility, sub, t, window: Window) -> frozenset[Lapse] | None:
    """The lapses that leave (facility, subspecialty) without a reader at ``t``, or None if covered
    (or not covered even with every renewal, which is a rota problem, not an expiry)."""
    study = StudyFacts(facility, sub.pk, sub.code, sub.name, None)
    would_read = [r for r in on_shift if assess_facts(as_renewed[r.user_id], study, t).eligible]
    if not would_read or any(assess_facts(r, study, t).eligible for r in would_read):
        return None
    return frozenset().union(*(_lapses_at(r, facility, t, window) for r in would_read))
