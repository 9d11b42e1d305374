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

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from enum import StrEnum
from functools import reduce
from operator import and_, or_
from zoneinfo import ZoneInfo

from django.contrib.auth import get_user_model
from django.db import connection
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
from radiology.statements import keyed

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
    ``[shifts_from, shifts_until]`` (just the instant when ``shifts_until`` is omitted).

    One query, whatever the number of readers: a row per reader, each one-to-many list (subspecialties,
    licences, covers, privileges with their facility and scope, shifts with their limits) aggregated
    into JSON beside it. Every worklist request asks this for its reader, never cached (see the
    module docstring), and building five ORM queries for it was a quarter of the request's CPU
    (bench/worklist, docs/worklist-fanout.md)."""
    _require_aware(shifts_from)
    user_ids = sorted(set(user_ids))
    if not user_ids:
        return {}
    shifts_until = shifts_until or shifts_from
    adapt = connection.ops.adapt_datetimefield_value
    sql = _facts_sql(connection.vendor).format(ids=", ".join(["%s"] * len(user_ids)))
    with connection.cursor() as cursor:
        cursor.execute(sql, [adapt(shifts_until), adapt(shifts_from), *user_ids])
        rows = cursor.fetchall()
    User = get_user_model()
    facts = {}
    for user_id, *names, subs, licences, covers, privileges, shifts in rows:
        subs = _json_list(subs)
        facts[user_id] = ReaderFacts(
            user_id=user_id,
            # str(User) of the joined columns: the name the reasons and the desk show
            name=str(User(**dict(zip(_NAME_FIELDS, names, strict=True)))),
            subspecialty_ids=frozenset(sub_id for sub_id, _ in subs),
            subspecialty_codes=frozenset(code for _, code in subs),
            licences=tuple(map(_licence_fact, sorted(_json_list(licences), key=_first))),
            privileges=tuple(_privilege_facts(_json_list(privileges))),
            shifts=tuple(_shift_fact(row) for row in sorted(map(_shift_row, _json_list(shifts)))),
            covers=tuple(map(_cover_fact, sorted(_json_list(covers), key=_first))),
        )
    return facts


# Each list a JSON array of arrays, the id first (the order the rules and reasons expect — licences and
# covers by id, privileges by facility name then id, shifts by start then id — is restored in Python:
# the SQLite of the embedded topology has no ORDER BY inside an aggregate before 3.44). ``{agg}`` and
# ``{arr}`` are the vendor's JSON functions; ``{sub}`` wraps a nested aggregate (SQLite drops a JSON
# value's type at a subquery's edge, so it is re-read with json()).
_FACTS_SQL = """
SELECT u.id, {names},
  (SELECT {agg}({arr}(s.id, s.code))
     FROM {profile_subs} ps JOIN {sub_table} s ON s.id = ps.subspecialty_id
    WHERE ps.radiologistprofile_id = p.id),
  (SELECT {agg}({arr}(l.id, l.state, l.number, l.status, l.issued_on, l.expires_on,
                      l.verified_at IS NOT NULL))
     FROM {licence} l WHERE l.profile_id = p.id),
  (SELECT {agg}({arr}(c.id, c.carrier, c.effective_on, c.expires_on, c.verified_at IS NOT NULL))
     FROM {cover} c WHERE c.profile_id = p.id),
  (SELECT {agg}({arr}(fp.id, fp.facility_id, f.name, fp.status, fp.granted_on, fp.expires_on,
                      {modalities}, f.state, f.timezone, f.accepts_general_readers,
                      f.reads_before_verification,
                      {sub}((SELECT {agg}({arr}(s.id, s.name))
                               FROM {scope_subs} ss JOIN {sub_table} s ON s.id = ss.subspecialty_id
                              WHERE ss.facilityprivilege_id = fp.id))))
     FROM {privilege} fp JOIN {facility} f ON f.id = fp.facility_id WHERE fp.profile_id = p.id),
  (SELECT {agg}({arr}(sh.id, sh.starts_at, sh.ends_at,
                      {sub}((SELECT {agg}(sf.facility_id) FROM {shift_facilities} sf
                              WHERE sf.shift_id = sh.id)),
                      {sub}((SELECT {agg}(sb.subspecialty_id) FROM {shift_subs} sb
                              WHERE sb.shift_id = sh.id))))
     FROM {shift} sh WHERE sh.radiologist_id = u.id AND sh.starts_at <= %s AND sh.ends_at > %s)
FROM {profile} p JOIN {user} u ON u.id = p.user_id
WHERE u.is_active AND p.user_id IN ({{ids}})
"""
_FACTS_SQL_BY_VENDOR: dict[str, str] = {}


def _facts_sql(vendor: str) -> str:
    """The facts query for this database, its table names from the models' meta (built once)."""
    if vendor not in _FACTS_SQL_BY_VENDOR:
        from worklist.models import Shift  # the shifts the engine judges (DESIGN.md §7 floors)

        def table(model) -> str:
            return connection.ops.quote_name(model._meta.db_table)

        sqlite = vendor == "sqlite"
        _FACTS_SQL_BY_VENDOR[vendor] = _FACTS_SQL.format(
            agg="json_group_array" if sqlite else "json_agg",
            arr="json_array" if sqlite else "json_build_array",
            sub="json" if sqlite else "",
            modalities="json(fp.scope_modalities)" if sqlite else "fp.scope_modalities",
            names=", ".join(f"u.{connection.ops.quote_name(name)}" for name in _NAME_FIELDS),
            user=table(get_user_model()),
            profile=table(RadiologistProfile),
            profile_subs=table(RadiologistProfile.subspecialties.through),
            sub_table=table(Subspecialty),
            licence=table(StateLicence),
            cover=table(MalpracticeCoverage),
            privilege=table(FacilityPrivilege),
            scope_subs=table(FacilityPrivilege.scope_subspecialties.through),
            facility=table(Facility),
            shift=table(Shift),
            shift_facilities=table(Shift.facilities.through),
            shift_subs=table(Shift.subspecialties.through),
        )
    return _FACTS_SQL_BY_VENDOR[vendor]


def _json_list(value) -> list:
    """An aggregated column: psycopg decodes PostgreSQL's json; SQLite's is text; no rows is NULL."""
    if value is None:
        return []
    return json.loads(value) if isinstance(value, str) else value


def _first(row: list) -> int:
    return row[0]


def _day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def _instant(value: str) -> datetime:
    # PostgreSQL writes the offset (the connection's time zone is UTC); SQLite stores naive UTC
    at = datetime.fromisoformat(value)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _licence_fact(row: list) -> LicenceFact:
    _id, state, number, status, issued_on, expires_on, verified = row
    return LicenceFact(state, number, status, _day(issued_on), _day(expires_on), verified=bool(verified))


def _cover_fact(row: list) -> CoverFact:
    _id, carrier, effective_on, expires_on, verified = row
    return CoverFact(carrier, _day(effective_on), _day(expires_on), bool(verified))


def _privilege_facts(rows: list) -> list[PrivilegeFact]:
    """The privileges by facility name, then id (the order their reasons are told in); each scope's
    subspecialties by name."""
    result = []
    for row in sorted(rows, key=lambda r: (r[2], r[0])):
        (
            _id,
            facility_id,
            name,
            status,
            granted,
            expires,
            modalities,
            state,
            zone,
            general,
            unverified,
            scope,
        ) = row
        scope = sorted(scope or (), key=lambda s: s[1])
        result.append(
            PrivilegeFact(
                facility_id,
                name,
                status,
                _day(granted),
                _day(expires),
                frozenset(sub_id for sub_id, _ in scope),
                tuple(sub_name for _, sub_name in scope),
                tuple(modalities or ()),
                FacilityFacts(facility_id, name, state, ZoneInfo(zone), bool(general), bool(unverified)),
            )
        )
    return result


def _shift_row(row: list) -> tuple:
    shift_id, starts_at, ends_at, facility_ids, subspecialty_ids = row
    return _instant(starts_at), shift_id, _instant(ends_at), facility_ids, subspecialty_ids


def _shift_fact(row: tuple) -> ShiftFact:
    starts_at, _id, ends_at, facility_ids, subspecialty_ids = row
    return ShiftFact(starts_at, ends_at, frozenset(facility_ids or ()), frozenset(subspecialty_ids or ()))


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


# "load the facts here": the default of the functions that may be given a reader's facts (None
# itself means "no facts": not an active radiologist)
LOAD_FACTS = object()


def readable_studies_q(radiologist, at: datetime, *, reader: ReaderFacts | None = LOAD_FACTS) -> Q:
    """A ``Q`` over ``imaging.Study`` selecting exactly the studies ``assess`` accepts for this reader
    at ``at``: an OR, per facility where licence and privileges hold, of the facility id AND the
    privilege scope AND the subspecialty fit AND the covering shifts' subspecialty limits.
    ``reader``: their facts, when the caller has just loaded them (``reader_facts`` with shifts from
    ``at`` — a wider window is fine: only shifts covering ``at`` count); None: not a radiologist."""
    if reader is LOAD_FACTS:
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
    general = keyed(
        Subspecialty.objects.filter(code=Subspecialty.GENERAL).values("pk"), "general subspecialty"
    )
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
