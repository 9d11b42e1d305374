"""The eligibility engine: may this radiologist read this study now? (DESIGN.md §6)

Routing, the worklist, claims and signing all ask here, so the answer is the same everywhere.
A reader is eligible for a study at instant ``at`` when **all** of these hold:

1. **Licence** — they hold a licence in the facility's state whose status is *active*, issued on or
   before the facility-local date of ``at`` and not expired. A credential dated "expires 2026-12-31"
   is valid until the end of that day *in the facility's time zone*: at 23:59 America/Chicago on
   31 Dec yes, at 00:00 on 1 Jan (06:00 UTC) no.
2. **Privileges** — a privilege at the facility that is *approved* or *approved by proxy*, granted on
   or before and expiring on or after the facility-local date (same midnight rule), whose scope
   covers the study: no subspecialty limit or the study's subspecialty among them; no modality
   limit or every image modality of the study (``CT\\SR`` → CT; SR, PR, KO … are not images) among
   them, and at least one.
3. **Subspecialty** — the study has no subspecialty (or *General / ER*), or the reader has the
   study's subspecialty, or the facility accepts general readers (``Facility.accepts_general_readers``)
   and the reader is a general reader. Which reader routing *prefers* is routing's business.
4. **Verification** — unless the facility lets readers read before verification
   (``Facility.reads_before_verification``, off by default), the licence in force in its state is
   verified with the primary source, and a malpractice cover in force on the facility-local date is
   too (issue 19). Board certification, DEA and fellowships are not asked here: privileges already
   stand for what a facility's bylaws require of them.
5. **Shift** — a shift covers ``at`` (``starts_at <= at < ends_at``) that is not limited to other
   facilities or to other subspecialties (a shift limited to subspecialties covers only studies of
   those subspecialties).

Every failed rule gives a ``Reason`` (a code and a sentence such as "no active licence in IL" or
"not on shift at 03:10 CST"); ``eligible`` is true exactly when there is none.

How it is built: the records of the readers concerned are loaded once per call into plain frozen
"facts" (a handful of queries, however many rules), and the rules are pure functions over those facts
and ``at``. Nothing is cached between calls, so a lapse, a suspension or the end of a shift takes
effect on the very next request: the study leaves the worklist and signing is refused with the reason.

For the worklist at scale, ``readable_studies_q(reader, at)`` turns the same rules into one ``Q`` over
``imaging.Study`` (per facility where licence, privileges and a shift hold: the facility id, the
privilege scope, the subspecialty fit and the shift's subspecialty limit), so a worklist is a single
indexed query; ``tests/credentialing/test_eligibility_q.py`` proves it selects exactly what ``assess``
accepts. ``eligible_readers(study, at)`` is the reverse question for routing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from enum import StrEnum
from functools import reduce
from operator import and_, or_
from zoneinfo import ZoneInfo

from django.contrib.auth import get_user_model
from django.db.models import Q

from credentialing.models import (
    GRANTED_PRIVILEGE_STATUSES,
    NON_IMAGE_MODALITIES,
    FacilityPrivilege,
    LicenceStatus,
    MalpracticeCoverage,
    PrivilegeStatus,
    RadiologistProfile,
    StateLicence,
    Subspecialty,
)
from facilities.models import Facility

# --- results ----------------------------------------------------------------------------------


class ReasonCode(StrEnum):
    NOT_A_RADIOLOGIST = "not_a_radiologist"
    LICENCE = "licence"
    VERIFICATION = "verification"
    PRIVILEGES = "privileges"
    PRIVILEGE_SCOPE = "privilege_scope"
    SUBSPECIALTY = "subspecialty"
    SHIFT = "shift"


@dataclass(frozen=True)
class Reason:
    code: ReasonCode
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Assessment:
    eligible: bool
    reasons: list[Reason] = field(default_factory=list)

    @property
    def messages(self) -> list[str]:
        return [r.message for r in self.reasons]

    def __bool__(self) -> bool:
        return self.eligible


# --- facts: the records the rules read, loaded once per call ------------------------------------


@dataclass(frozen=True)
class LicenceFact:
    state: str
    number: str
    status: str
    issued_on: date
    expires_on: date
    verified: bool = False  # a primary-source verification is recorded


@dataclass(frozen=True)
class CoverFact:
    """A malpractice cover: in force from ``effective_on`` to the end of ``expires_on``."""

    carrier: str
    effective_on: date
    expires_on: date
    verified: bool


@dataclass(frozen=True)
class PrivilegeFact:
    facility_id: int
    facility_name: str
    status: str
    granted_on: date | None
    expires_on: date | None
    subspecialty_ids: frozenset[int]
    subspecialty_names: tuple[str, ...]
    modalities: tuple[str, ...]
    # the facility's own facts, loaded with the privilege (None: look the facility up)
    facility: FacilityFacts | None = None


@dataclass(frozen=True)
class ShiftFact:
    starts_at: datetime
    ends_at: datetime
    facility_ids: frozenset[int]
    subspecialty_ids: frozenset[int]


@dataclass(frozen=True)
class ReaderFacts:
    user_id: int
    name: str
    subspecialty_ids: frozenset[int]
    subspecialty_codes: frozenset[str]
    licences: tuple[LicenceFact, ...]
    privileges: tuple[PrivilegeFact, ...]
    shifts: tuple[ShiftFact, ...]
    covers: tuple[CoverFact, ...] = ()

    @property
    def is_general(self) -> bool:
        return Subspecialty.GENERAL in self.subspecialty_codes


@dataclass(frozen=True)
class FacilityFacts:
    id: int
    name: str
    state: str
    zone: ZoneInfo
    accepts_general_readers: bool
    reads_before_verification: bool = False

    @classmethod
    def of(cls, facility: Facility) -> FacilityFacts:
        return cls(
            facility.pk,
            facility.name,
            facility.state,
            facility.zone,
            facility.accepts_general_readers,
            facility.reads_before_verification,
        )


@dataclass(frozen=True)
class StudyFacts:
    facility: FacilityFacts
    subspecialty_id: int | None
    subspecialty_code: str | None
    subspecialty_name: str | None
    # None: not considered (coverage forecasts ask about a facility × subspecialty, not a study).
    modalities: str | None

    @classmethod
    def of(cls, study) -> StudyFacts:
        sub = study.subspecialty
        return cls(
            FacilityFacts.of(study.facility),
            sub.pk if sub else None,
            sub.code if sub else None,
            sub.name if sub else None,
            study.modalities,
        )


# --- the rules (pure) -------------------------------------------------------------------------


def _require_aware(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("eligibility needs an aware datetime (a naive one has no facility-local date)")
    return at


def local_day(at: datetime, zone: ZoneInfo) -> date:
    """The calendar date at the facility when ``at`` happens: the date credentials are compared with."""
    return _require_aware(at).astimezone(zone).date()


def licence_in_force(licence: LicenceFact, day: date) -> bool:
    return licence.status == LicenceStatus.ACTIVE and licence.issued_on <= day <= licence.expires_on


def privilege_in_force(privilege: PrivilegeFact, day: date) -> bool:
    return (
        privilege.status in GRANTED_PRIVILEGE_STATUSES
        and privilege.granted_on is not None
        and privilege.expires_on is not None
        and privilege.granted_on <= day <= privilege.expires_on
    )


def licence_reasons(reader: ReaderFacts, facility: FacilityFacts, at: datetime) -> list[Reason]:
    day = local_day(at, facility.zone)
    held = [lic for lic in reader.licences if lic.state == facility.state]
    if any(licence_in_force(lic, day) for lic in held):
        return []
    message = f"no active licence in {facility.state}"
    if held:
        latest = max(held, key=lambda lic: lic.expires_on)
        message += f": licence {latest.number} {_licence_problem(latest, day)}"
    return [Reason(ReasonCode.LICENCE, message)]


def _licence_problem(licence: LicenceFact, day: date) -> str:
    if licence.status != LicenceStatus.ACTIVE:
        return f"is {LicenceStatus(licence.status).label.lower()}"
    if day < licence.issued_on:
        return f"is valid from {licence.issued_on.isoformat()}"
    return f"expired on {licence.expires_on.isoformat()}"


def cover_in_force(cover: CoverFact, day: date) -> bool:
    return cover.effective_on <= day <= cover.expires_on


def verification_reasons(reader: ReaderFacts, facility: FacilityFacts, at: datetime) -> list[Reason]:
    """What is still unverified, where the facility requires verification before reading: the
    licence in force in its state (none in force is the licence rule's reason, not this one) and a
    malpractice cover in force — missing, lapsed or unverified. One reason listing every problem."""
    if facility.reads_before_verification:
        return []
    day = local_day(at, facility.zone)
    problems = [p for p in (licence_unverified(reader, facility.state, day), cover_problem(reader, day)) if p]
    if not problems:
        return []
    message = f"{facility.name} requires verified credentials: {'; '.join(problems)}"
    return [Reason(ReasonCode.VERIFICATION, message)]


def licence_unverified(reader: ReaderFacts, state: str, day: date) -> str | None:
    """The problem ("IL licence 036-123456 not verified") when the reader's licences in force in
    ``state`` on ``day`` all lack a primary-source verification; None when one is verified or none is
    in force (no licence at all is the licence rule's reason)."""
    in_force = [lic for lic in reader.licences if lic.state == state and licence_in_force(lic, day)]
    if in_force and not any(lic.verified for lic in in_force):
        return f"{state} licence {in_force[0].number} not verified"
    return None


def cover_problem(reader: ReaderFacts, day: date) -> str | None:
    """What is wrong with the reader's malpractice cover on ``day`` (missing, lapsed, unverified), or None."""
    covers = [c for c in reader.covers if cover_in_force(c, day)]
    if not covers:
        last = max((c.expires_on for c in reader.covers if c.expires_on < day), default=None)
        return f"malpractice cover lapsed on {last.isoformat()}" if last else "no malpractice cover"
    if not any(c.verified for c in covers):
        return f"malpractice cover ({covers[0].carrier}) not verified"
    return None


def privilege_reasons(reader: ReaderFacts, study: StudyFacts, at: datetime) -> list[Reason]:
    facility = study.facility
    day = local_day(at, facility.zone)
    held = [p for p in reader.privileges if p.facility_id == facility.id]
    in_force = [p for p in held if privilege_in_force(p, day)]
    if not in_force:
        return [Reason(ReasonCode.PRIVILEGES, _privilege_problem(held, facility, day))]
    if any(scope_covers(p, study) for p in in_force):
        return []
    return [Reason(ReasonCode.PRIVILEGE_SCOPE, _scope_problem(in_force[0], study))]


def _privilege_problem(held: list[PrivilegeFact], facility: FacilityFacts, day: date) -> str:
    where = f"privileges at {facility.name}"
    if not held:
        return f"no {where}"
    # The open application or grant explains best; otherwise the most recent history.
    latest = max(
        held,
        key=lambda p: (
            p.status not in (PrivilegeStatus.DENIED, PrivilegeStatus.LAPSED),
            p.expires_on or date.min,
        ),
    )
    status = latest.status
    if status in GRANTED_PRIVILEGE_STATUSES:
        if latest.granted_on and day < latest.granted_on:
            return f"{where} start on {latest.granted_on.isoformat()}"
        return f"{where} expired on {latest.expires_on.isoformat()}"
    if status == PrivilegeStatus.LAPSED:
        # Ended early (resignation, facility decision) or closed after expiry: say which.
        expired = latest.expires_on is not None and latest.expires_on < day
        return f"{where} lapsed" + (f": expired on {latest.expires_on.isoformat()}" if expired else "")
    if status == PrivilegeStatus.DENIED:
        return f"{where} were denied"
    return f"{where} are {PrivilegeStatus(status).label.lower()}, not yet granted"


def image_modalities(modalities: str) -> list[str]:
    return [m for m in modalities.split("\\") if m not in NON_IMAGE_MODALITIES]


def modality_patterns(scope: Iterable[str]) -> tuple[str, str]:
    """Two regular expressions over the backslash-joined ``Study.modalities``: every token is in the
    scope or a non-image object, and at least one token is in the scope. The same patterns serve
    Python (``re.search``) and the database (``__regex``: PostgreSQL ARE and Django's SQLite REGEXP
    agree on this subset), so the worklist query and ``assess`` cannot drift apart."""
    scope = sorted(set(scope))
    allowed = "|".join(sorted(set(scope) | set(NON_IMAGE_MODALITIES)))
    every = rf"^(?:(?:{allowed})\\)*(?:{allowed})$"
    some = rf"(?:^|\\)(?:{'|'.join(scope)})(?:\\|$)"
    return every, some


def scope_covers(privilege: PrivilegeFact, study: StudyFacts) -> bool:
    if privilege.subspecialty_ids and study.subspecialty_id not in privilege.subspecialty_ids:
        return False
    if privilege.modalities and study.modalities is not None:
        every, some = modality_patterns(privilege.modalities)
        return bool(re.search(every, study.modalities) and re.search(some, study.modalities))
    return True


def _scope_problem(privilege: PrivilegeFact, study: StudyFacts) -> str:
    where = f"privileges at {privilege.facility_name}"
    if privilege.subspecialty_ids and study.subspecialty_id not in privilege.subspecialty_ids:
        what = study.subspecialty_name or "unclassified"
        return f"{where} cover {', '.join(privilege.subspecialty_names)} only, not {what} studies"
    outside = [m for m in image_modalities(study.modalities or "") if m not in privilege.modalities]
    what = "/".join(outside) or "unknown-modality"
    return f"{where} cover {', '.join(privilege.modalities)} only, not {what} studies"


# How a subspecialty's reader is called in sentences ("not a neuroradiologist").
READER_NOUNS = {
    Subspecialty.NEURO: "neuroradiologist",
    Subspecialty.MSK: "musculoskeletal radiologist",
    Subspecialty.BODY: "body radiologist",
    Subspecialty.CHEST: "chest radiologist",
    Subspecialty.PEDIATRIC: "paediatric radiologist",
    Subspecialty.BREAST: "breast imager",
    Subspecialty.NUCLEAR: "nuclear medicine physician",
    Subspecialty.GENERAL: "general radiologist",
}


def subspecialty_open_to_all(study: StudyFacts) -> bool:
    return study.subspecialty_id is None or study.subspecialty_code == Subspecialty.GENERAL


def subspecialty_reasons(reader: ReaderFacts, study: StudyFacts) -> list[Reason]:
    if subspecialty_open_to_all(study) or study.subspecialty_id in reader.subspecialty_ids:
        return []
    if study.facility.accepts_general_readers and reader.is_general:
        return []
    noun = READER_NOUNS.get(study.subspecialty_code, f"{study.subspecialty_name} reader")
    message = f"not {'an' if noun[0] in 'aeiou' else 'a'} {noun}"
    if reader.is_general:
        message += f", and {study.facility.name} does not accept general readers for it"
    return [Reason(ReasonCode.SUBSPECIALTY, message)]


def shift_covers(shift: ShiftFact, study: StudyFacts, at: datetime) -> bool:
    return (
        shift.starts_at <= at < shift.ends_at
        and (not shift.facility_ids or study.facility.id in shift.facility_ids)
        and (not shift.subspecialty_ids or study.subspecialty_id in shift.subspecialty_ids)
    )


def shift_reasons(reader: ReaderFacts, study: StudyFacts, at: datetime) -> list[Reason]:
    if any(shift_covers(s, study, at) for s in reader.shifts):
        return []
    when = at.astimezone(study.facility.zone).strftime("%H:%M %Z")
    on_duty = any(s.starts_at <= at < s.ends_at for s in reader.shifts)
    message = f"on shift at {when} only for other work" if on_duty else f"not on shift at {when}"
    return [Reason(ReasonCode.SHIFT, message)]


def assess_facts(reader: ReaderFacts | None, study: StudyFacts, at: datetime) -> Assessment:
    """The whole rule set over loaded facts; pure."""
    if reader is None:
        return Assessment(
            False, [Reason(ReasonCode.NOT_A_RADIOLOGIST, "not a radiologist with a reading profile")]
        )
    reasons = [
        *licence_reasons(reader, study.facility, at),
        *verification_reasons(reader, study.facility, at),
        *privilege_reasons(reader, study, at),
        *subspecialty_reasons(reader, study),
        *shift_reasons(reader, study, at),
    ]
    return Assessment(not reasons, reasons)


# --- loading facts ----------------------------------------------------------------------------


_NAME_FIELDS = ("display_name", "first_name", "last_name", "username")


def reader_facts(
    user_ids: Iterable[int], *, shifts_from: datetime, shifts_until: datetime | None = None
) -> dict[int, ReaderFacts]:
    """Facts for these users (active radiologists with a profile only), with the shifts overlapping
    ``[shifts_from, shifts_until]`` (just the instant when ``shifts_until`` is omitted)."""
    _require_aware(shifts_from)
    user_ids = list(user_ids)
    shifts_until = shifts_until or shifts_from
    # Plain rows, not model instances with prefetches, and each one-to-many list joined onto its
    # parent's query (five queries in all): every worklist request asks this for its reader, and
    # building the ORM's queries was most of it (bench/worklist).
    profiles: dict[int, tuple] = {}
    subspecialties: dict[int, list[tuple[int, str]]] = {}
    for profile_id, user_id, *names, sub_id, code in RadiologistProfile.objects.filter(
        user_id__in=user_ids, user__is_active=True
    ).values_list(
        "id",
        "user_id",
        *(f"user__{name}" for name in _NAME_FIELDS),
        "subspecialties__id",
        "subspecialties__code",
    ):
        profiles[profile_id] = (profile_id, user_id, *names)
        if sub_id is not None:
            subspecialties.setdefault(profile_id, []).append((sub_id, code))
    ids = list(profiles)
    licences: dict[int, list[LicenceFact]] = {}
    for profile_id, *fields in (
        StateLicence.objects.filter(profile_id__in=ids)
        .order_by("id")
        .values_list("profile_id", "state", "number", "status", "issued_on", "expires_on", "verified_at")
    ):
        licences.setdefault(profile_id, []).append(LicenceFact(*fields[:-1], verified=fields[-1] is not None))
    covers: dict[int, list[CoverFact]] = {}
    for profile_id, *fields in (
        MalpracticeCoverage.objects.filter(profile_id__in=ids)
        .order_by("id")
        .values_list("profile_id", "carrier", "effective_on", "expires_on", "verified_at")
    ):
        covers.setdefault(profile_id, []).append(CoverFact(*fields[:-1], verified=fields[-1] is not None))
    privileges = _privilege_facts(ids)
    shifts = _shift_facts(user_ids, shifts_from, shifts_until)
    facts = {}
    for profile_id, user_id, *names in profiles.values():
        subs = subspecialties.get(profile_id, [])
        facts[user_id] = ReaderFacts(
            user_id=user_id,
            name=str(get_user_model()(**dict(zip(_NAME_FIELDS, names, strict=True)))),
            subspecialty_ids=frozenset(sub_id for sub_id, _ in subs),
            subspecialty_codes=frozenset(code for _, code in subs),
            licences=tuple(licences.get(profile_id, ())),
            privileges=tuple(privileges.get(profile_id, ())),
            shifts=tuple(shifts.get(user_id, ())),
            covers=tuple(covers.get(profile_id, ())),
        )
    return facts


def _privilege_facts(profile_ids: list[int]) -> dict[int, list[PrivilegeFact]]:
    """Each profile's privileges with their facility's facts and scope (one query: a row per scope
    subspecialty, in name order)."""
    columns = ("id", "profile_id", "facility_id", "status", "granted_on", "expires_on", "scope_modalities")
    facility_columns = (
        "facility__name",
        "facility__state",
        "facility__timezone",
        "facility__accepts_general_readers",
        "facility__reads_before_verification",
    )
    rows: dict[int, tuple] = {}
    scopes: dict[int, list[tuple[int, str]]] = {}
    for pk, *fields, sub_id, sub_name in (
        FacilityPrivilege.objects.filter(profile_id__in=profile_ids)
        .order_by("facility__name", "id", "scope_subspecialties__name")
        .values_list(*columns, *facility_columns, "scope_subspecialties__id", "scope_subspecialties__name")
    ):
        rows.setdefault(pk, tuple(fields))
        if sub_id is not None:
            scopes.setdefault(pk, []).append((sub_id, sub_name))
    result: dict[int, list[PrivilegeFact]] = {}
    for pk, (profile_id, facility_id, status, granted, expires, modalities, *facility_fields) in rows.items():
        scope = scopes.get(pk, [])
        name, state, zone, general, before_verification = facility_fields
        result.setdefault(profile_id, []).append(
            PrivilegeFact(
                facility_id,
                name,
                status,
                granted,
                expires,
                frozenset(sub_id for sub_id, _ in scope),
                tuple(sub_name for _, sub_name in scope),
                tuple(modalities or ()),
                FacilityFacts(facility_id, name, state, ZoneInfo(zone), general, before_verification),
            )
        )
    return result


def _shift_facts(user_ids: list[int], since: datetime, until: datetime) -> dict[int, list[ShiftFact]]:
    """The shifts overlapping ``[since, until]`` per reader. Plain rows with both limits joined on
    (one query: a row per facility × subspecialty limit, one for an unlimited shift) rather than
    ``prefetch_related``: a week's rota for a whole group is thousands of shifts, and a related
    manager per shift costs seconds (the coverage grid, the forecast)."""
    from worklist.models import Shift

    rows: dict[int, tuple] = {}
    facilities: dict[int, set[int]] = {}
    subspecialties: dict[int, set[int]] = {}
    for pk, reader_id, starts_at, ends_at, facility_id, subspecialty_id in (
        Shift.objects.filter(radiologist_id__in=user_ids, starts_at__lte=until, ends_at__gt=since)
        .order_by("starts_at", "pk")
        .values_list("pk", "radiologist_id", "starts_at", "ends_at", "facilities__id", "subspecialties__id")
    ):
        rows.setdefault(pk, (reader_id, starts_at, ends_at))
        if facility_id is not None:
            facilities.setdefault(pk, set()).add(facility_id)
        if subspecialty_id is not None:
            subspecialties.setdefault(pk, set()).add(subspecialty_id)
    shifts: dict[int, list[ShiftFact]] = {}
    for pk, (reader_id, starts_at, ends_at) in rows.items():
        shifts.setdefault(reader_id, []).append(
            ShiftFact(
                starts_at,
                ends_at,
                frozenset(facilities.get(pk, ())),
                frozenset(subspecialties.get(pk, ())),
            )
        )
    return shifts


def _load_study(study):
    """A Study instance as given (its facility and subspecialty load lazily), or fetch one by id."""
    from imaging.models import Study

    if isinstance(study, Study):
        return study
    return Study.objects.select_related("facility", "subspecialty").get(pk=study)


# --- the questions ----------------------------------------------------------------------------


def assess(radiologist, study, at: datetime) -> Assessment:
    """May ``radiologist`` (a user) read ``study`` (a Study or its id) at ``at``? With the reasons if not."""
    study_facts = StudyFacts.of(_load_study(study))
    reader = reader_facts([radiologist.pk], shifts_from=at).get(radiologist.pk)
    return assess_facts(reader, study_facts, at)


def assess_readers(
    study, at: datetime, radiologists: Iterable | None = None
) -> list[tuple[object, Assessment]]:
    """Every active radiologist (or those given) with their assessment for ``study`` — for routing
    and operations, which show each ineligible reader's reason."""
    User = get_user_model()
    study = _load_study(study)
    users = (
        list(radiologists)
        if radiologists is not None
        else list(
            User.objects.filter(radiologist_profile__isnull=False, is_active=True).order_by(
                "display_name", "username"
            )
        )
    )
    facts = reader_facts([u.pk for u in users], shifts_from=at)
    study_facts = StudyFacts.of(study)
    return [(u, assess_facts(facts.get(u.pk), study_facts, at)) for u in users]


def eligible_readers(study, at: datetime) -> list:
    """The users who may read ``study`` at ``at``. The database narrows the candidates (a grant at the
    facility, a licence in its state, a shift around ``at``); the rules decide."""
    from worklist.models import Shift

    User = get_user_model()
    _require_aware(at)
    study = _load_study(study)
    candidates = User.objects.filter(
        is_active=True,
        radiologist_profile__privileges__facility_id=study.facility_id,
        radiologist_profile__privileges__status__in=GRANTED_PRIVILEGE_STATUSES,
        radiologist_profile__licences__state=study.facility.state,
        radiologist_profile__licences__status=LicenceStatus.ACTIVE,
        pk__in=Shift.objects.filter(starts_at__lte=at, ends_at__gt=at).values("radiologist_id"),
    ).distinct()
    users = list(candidates.order_by("display_name", "username"))
    return [u for u, a in assess_readers(study, at, users) if a.eligible]


def reading_facility_ids(radiologist, at: datetime) -> set[int]:
    """Facilities where the reader holds, at ``at``, both privileges and a licence for the state —
    what their pages may show (DESIGN.md §1), regardless of shift."""
    reader = reader_facts([radiologist.pk], shifts_from=at).get(radiologist.pk)
    if reader is None:
        return set()
    return {f.id for f, _ in _licensed_grants(reader, at)}


def _licensed_grants(reader: ReaderFacts, at: datetime) -> list[tuple[FacilityFacts, list[PrivilegeFact]]]:
    granted = [p for p in reader.privileges if p.status in GRANTED_PRIVILEGE_STATUSES]
    if all(p.facility for p in granted):  # loaded with the privileges: no query
        facilities = sorted({p.facility for p in granted}, key=lambda f: f.id)
    else:
        granted_ids = {p.facility_id for p in granted}
        facilities = list(map(FacilityFacts.of, Facility.objects.filter(pk__in=granted_ids).order_by("pk")))
    result = []
    for facility in facilities:
        day = local_day(at, facility.zone)
        grants = [p for p in reader.privileges if p.facility_id == facility.id and privilege_in_force(p, day)]
        if grants and not licence_reasons(reader, facility, at):
            result.append((facility, grants))
    return result


def readable_studies_q(radiologist, at: datetime) -> Q:
    """A ``Q`` over ``imaging.Study`` selecting exactly the studies ``assess`` accepts for this reader
    at ``at``: an OR, per facility where licence and privileges hold, of the facility id AND the
    privilege scope AND the subspecialty fit AND the covering shifts' subspecialty limits."""
    reader = reader_facts([radiologist.pk], shifts_from=at).get(radiologist.pk)
    clauses, facility_ids = [], set()
    for facility, grants in _licensed_grants(reader, at) if reader else []:
        shifts = [
            s
            for s in reader.shifts
            if s.starts_at <= at < s.ends_at and (not s.facility_ids or facility.id in s.facility_ids)
        ]
        if not shifts or verification_reasons(reader, facility, at):
            continue
        conditions = [
            _any(_scope_q(p) for p in grants),
            _subspecialty_fit_q(reader, facility),
            _any(_shift_subspecialty_q(s) for s in shifts),
        ]
        clauses.append(reduce(and_, [c for c in conditions if c is not None], Q(facility_id=facility.id)))
        facility_ids.add(facility.id)
    if not clauses:
        return Q(pk__in=[])
    # The facilities once more, redundantly: PostgreSQL can then answer from one scan of an index on
    # the facility (``facility_id = ANY (…)``, each facility's rules a filter on the index's own
    # columns — an index-only count) instead of OR-ing one bitmap scan per facility.
    return Q(facility_id__in=sorted(facility_ids)) & reduce(or_, clauses)


# A condition is a Q, or None for "no restriction" — Q() cannot stand for "true" because Django drops
# an empty Q from an OR instead of making the OR true.
def _any(conditions: Iterable[Q | None]) -> Q | None:
    conditions = list(conditions)
    if not conditions or any(c is None for c in conditions):
        return None
    return reduce(or_, conditions)


def _scope_q(privilege: PrivilegeFact) -> Q | None:
    parts = []
    if privilege.subspecialty_ids:
        parts.append(Q(subspecialty_id__in=sorted(privilege.subspecialty_ids)))
    if privilege.modalities:
        every, some = modality_patterns(privilege.modalities)
        parts.append(Q(modalities__regex=every) & Q(modalities__regex=some))
    return reduce(and_, parts) if parts else None


def _subspecialty_fit_q(reader: ReaderFacts, facility: FacilityFacts) -> Q | None:
    if reader.is_general and facility.accepts_general_readers:
        return None
    # the general subspecialty by a subquery, not a join: the worklist's count then reads one index
    general = Subspecialty.objects.filter(code=Subspecialty.GENERAL).values("pk")
    fit = Q(subspecialty__isnull=True) | Q(subspecialty_id__in=general)
    if reader.subspecialty_ids:
        fit |= Q(subspecialty_id__in=sorted(reader.subspecialty_ids))
    return fit


def _shift_subspecialty_q(shift: ShiftFact) -> Q | None:
    return Q(subspecialty_id__in=sorted(shift.subspecialty_ids)) if shift.subspecialty_ids else None


def renewed(reader: ReaderFacts, *, since: date, through: date) -> ReaderFacts:
    """The reader as if every licence and grant expiring between ``since`` and ``through`` were
    renewed — the counterfactual the coverage forecast compares with."""

    def due(expires_on: date | None) -> bool:
        return expires_on is not None and since <= expires_on <= through

    return replace(
        reader,
        licences=tuple(
            replace(lic, expires_on=date.max) if due(lic.expires_on) else lic for lic in reader.licences
        ),
        privileges=tuple(
            replace(p, expires_on=date.max) if due(p.expires_on) else p for p in reader.privileges
        ),
        covers=tuple(replace(c, expires_on=date.max) if due(c.expires_on) else c for c in reader.covers),
    )
