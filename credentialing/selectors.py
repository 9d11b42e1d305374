"""Reads of credentialing data, and the one place that decides who may see or change it.

* Credentialing staff (MSO): see and edit every dossier, privilege and facility setting — and never
  patient data: nothing here touches Patient, Order or Study.
* Operations and the medical director: read everything credentialing (coverage and QA need it),
  change nothing; document files stay with the MSO and their owner.
* A radiologist: their own dossier, read-only, and may upload documents (renewals) to it.
* A facility admin: which readers hold open privileges at the facilities they administer — not the
  dossiers behind them.

Anything outside a user's scope answers 404, the same as a missing record."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Prefetch, QuerySet
from django.http import Http404

from accounts.roles import Role, has_role
from credentialing.eligibility import (
    cover_problem,
    licence_in_force,
    licence_unverified,
    local_day,
    privilege_in_force,
    reader_facts,
    verification_reasons,
)
from credentialing.models import (
    GRANTED_PRIVILEGE_STATUSES,
    OPEN_PRIVILEGE_STATUSES,
    BoardCertification,
    DeaRegistration,
    Document,
    FacilityPrivilege,
    LicenceStatus,
    MalpracticeCoverage,
    Notification,
    PrivilegeChecklistItem,
    PrivilegeStatus,
    RadiologistProfile,
    StateLicence,
)
from facilities.models import Facility
from facilities.selectors import facilities_administered_by

# Credentials without a facility (licences, boards, DEA, malpractice) expire at the end of their date
# wherever the reader works; statuses are closed only once that day has ended in every US zone.
LATEST_US_ZONE = ZoneInfo("Pacific/Honolulu")


def expiry_windows() -> tuple[int, ...]:
    """The days ahead at which credentialing staff are told of an expiry, largest first (setting
    ``READROOM_CREDENTIAL_NOTICE_DAYS``, default 90, 60, 30): an office that wants 120 days' notice sets
    it without a code change."""
    return tuple(
        sorted({int(d) for d in settings.READROOM_CREDENTIAL_NOTICE_DAYS if int(d) >= 0}, reverse=True)
    )


# --- who may do what --------------------------------------------------------------------------


def can_manage_credentialing(user) -> bool:
    return user.is_authenticated and (user.is_superuser or has_role(user, Role.CREDENTIALING))


def can_read_credentialing(user) -> bool:
    """Everything credentialing, across radiologists: MSO, operations, medical director."""
    return can_manage_credentialing(user) or (
        user.is_authenticated and has_role(user, Role.OPERATIONS, Role.MEDICAL_DIRECTOR)
    )


def eligibility_studies_for(user) -> QuerySet:
    """The studies the eligibility API answers about for ``user``: every study for those who read
    all credentialing; for a radiologist asking about themselves, the studies of the facilities
    where they hold or held a privilege (of any status: "your privilege lapsed" is their answer).
    Another facility's study is 404, as a missing one: the reasons would tell its state and
    subspecialty (issue 15 §9)."""
    from imaging.models import Study

    if can_read_credentialing(user):
        return Study.objects.all()
    if is_radiologist(user):
        held = FacilityPrivilege.objects.filter(profile__user=user).values("facility_id")
        return Study.objects.filter(facility_id__in=held)
    return Study.objects.none()


def is_radiologist(user) -> bool:
    return user.is_authenticated and has_role(user, Role.RADIOLOGIST)


def can_see_facility_readers(user) -> bool:
    return can_read_credentialing(user) or (user.is_authenticated and has_role(user, Role.FACILITY_ADMIN))


# --- dossiers ---------------------------------------------------------------------------------


def profiles_visible_to(user) -> QuerySet[RadiologistProfile]:
    profiles = RadiologistProfile.objects.select_related("user")
    if can_read_credentialing(user):
        return profiles
    if is_radiologist(user):
        return profiles.filter(user=user)
    return profiles.none()


def access_profile(user, profile_id: int) -> RadiologistProfile:
    profile = profiles_visible_to(user).filter(pk=profile_id).first()
    if profile is None:
        raise Http404("No such dossier")
    return profile


def access_profile_for_upload(user, profile_id: int) -> RadiologistProfile:
    """The MSO uploads to any dossier; a radiologist to their own (renewals)."""
    profile = access_profile(user, profile_id)
    if not (can_manage_credentialing(user) or profile.user_id == user.pk):
        raise Http404("No such dossier")
    return profile


def own_profile(user) -> RadiologistProfile | None:
    return RadiologistProfile.objects.filter(user=user).select_related("user").first()


def dossier(profile: RadiologistProfile) -> dict:
    """Everything in one dossier, each list in the order people read it."""
    return {
        "profile": profile,
        "subspecialties": list(profile.subspecialties.all()),
        "licences": list(profile.licences.select_related("verified_by", "verification_document")),
        "boards": list(profile.board_certifications.select_related("verified_by", "verification_document")),
        "fellowships": list(profile.fellowships.select_related("subspecialty", "verified_by")),
        "deas": list(profile.dea_registrations.select_related("verified_by")),
        "malpractice": list(profile.malpractice_coverages.select_related("verified_by")),
        "privileges": list(
            profile.privileges.select_related("facility", "decided_by")
            .prefetch_related("scope_subspecialties", _checklist_prefetch())
            .order_by("facility__name", "-applied_on")
        ),
        "documents": list(profile.documents.select_related("uploaded_by")),
    }


def _checklist_prefetch() -> Prefetch:
    return Prefetch("checklist", queryset=PrivilegeChecklistItem.objects.select_related("completed_by"))


# --- records by id, scoped ----------------------------------------------------------------------


def licences_visible_to(user) -> QuerySet[StateLicence]:
    return StateLicence.objects.filter(profile__in=profiles_visible_to(user)).select_related("profile__user")


def boards_visible_to(user) -> QuerySet[BoardCertification]:
    return BoardCertification.objects.filter(profile__in=profiles_visible_to(user)).select_related(
        "profile__user"
    )


def documents_visible_to(user) -> QuerySet[Document]:
    """Document *metadata*: whoever may read the dossier."""
    return Document.objects.filter(profile__in=profiles_visible_to(user)).select_related(
        "profile__user", "uploaded_by"
    )


def access_document_content(user, document_id: int) -> Document:
    """Who may download the file itself: credentialing staff and the document's owner."""
    document = documents_visible_to(user).filter(pk=document_id).first()
    if document is None or not (can_manage_credentialing(user) or document.profile.user_id == user.pk):
        raise Http404("No such document")
    return document


def privileges_visible_to(user) -> QuerySet[FacilityPrivilege]:
    privileges = FacilityPrivilege.objects.select_related("profile__user", "facility").prefetch_related(
        "scope_subspecialties"
    )
    if can_read_credentialing(user):
        return privileges
    if is_radiologist(user):
        return privileges.filter(profile__user=user)
    if user.is_authenticated and has_role(user, Role.FACILITY_ADMIN):
        return privileges.filter(
            facility__in=facilities_administered_by(user), status__in=OPEN_PRIVILEGE_STATUSES
        )
    return privileges.none()


def access_privilege(user, privilege_id: int) -> FacilityPrivilege:
    privilege = privileges_visible_to(user).filter(pk=privilege_id).first()
    if privilege is None:
        raise Http404("No such privilege")
    return privilege


def facilities_for_readers_page(user) -> QuerySet[Facility]:
    """Facilities whose privileged readers the user may list."""
    if can_read_credentialing(user):
        return Facility.objects.all()
    if user.is_authenticated and has_role(user, Role.FACILITY_ADMIN):
        return facilities_administered_by(user)
    return Facility.objects.none()


def facility_readers(facility: Facility) -> list[FacilityPrivilege]:
    return list(
        FacilityPrivilege.objects.filter(facility=facility, status__in=OPEN_PRIVILEGE_STATUSES)
        .select_related("profile__user")
        .prefetch_related("scope_subspecialties", "profile__subspecialties")
        .order_by("profile__user__display_name", "profile__user__username")
    )


# --- the MSO's views ------------------------------------------------------------------------


def facility_day(facility: Facility, at: datetime) -> date:
    return at.astimezone(facility.zone).date()


@dataclass(frozen=True)
class CredentialFlag:
    """A reader whose licence in force is unverified, or whose malpractice cover is missing, lapsed or
    unverified — however their privileges read. ``problems`` are the engine's own words; ``barred``
    maps each facility where they hold privileges in force and verification is required (the
    default) to the eligibility reason that keeps them off its studies; ``allowed`` names the
    facilities that let them read before verification."""

    user_id: int
    reader_name: str
    problems: tuple[str, ...]
    barred: dict[int, str]
    barred_names: tuple[str, ...]
    allowed: tuple[str, ...]


def credential_flags(at: datetime, user_ids: Iterable[int] | None = None) -> dict[int, CredentialFlag]:
    """The flagged readers among ``user_ids`` (default: every active radiologist), by user id.
    The reader's own problems are judged on the latest US date (as expiry lists are); whether they
    bar reading at a facility is the eligibility engine's verification rule on that facility's date."""
    if user_ids is None:
        user_ids = RadiologistProfile.objects.filter(user__is_active=True).values_list("user_id", flat=True)
    day = at.astimezone(LATEST_US_ZONE).date()
    flags = {}
    for user_id, reader in reader_facts(user_ids, shifts_from=at).items():
        states = sorted({lic.state for lic in reader.licences if licence_in_force(lic, day)})
        problems = [licence_unverified(reader, state, day) for state in states]
        problems = tuple(p for p in (*problems, cover_problem(reader, day)) if p)
        if not problems:
            continue
        barred, barred_names, allowed = {}, set(), set()
        for privilege in reader.privileges:
            facility = privilege.facility
            if facility is None or not privilege_in_force(privilege, local_day(at, facility.zone)):
                continue
            if facility.reads_before_verification:
                allowed.add(facility.name)
            elif reasons := verification_reasons(reader, facility, at):
                barred[facility.id] = reasons[0].message
                barred_names.add(facility.name)
        flags[user_id] = CredentialFlag(
            user_id, reader.name, problems, barred, tuple(sorted(barred_names)), tuple(sorted(allowed))
        )
    return flags


def flagged_readers(at: datetime) -> list[CredentialFlag]:
    """Every flagged reader, by name: the coverage forecast lists them beside its gaps."""
    return sorted(credential_flags(at).values(), key=lambda f: (f.reader_name, f.user_id))


@dataclass(frozen=True)
class MatrixCell:
    privilege: FacilityPrivilege | None
    tone: str  # none | pending | ok | soon | urgent | expired | closed
    label: str
    days_left: int | None
    flag: str = ""  # the verification reason that keeps a granted privilege from reading


MatrixRow = tuple[RadiologistProfile, list[MatrixCell], CredentialFlag | None]


def matrix(at: datetime) -> tuple[list[Facility], list[MatrixRow]]:
    """Radiologists × facilities: each cell the open privilege (or the latest closed one), coloured
    by status and days to expiry in the facility's time zone; each row with the reader's credential
    flag, if any, and each granted cell that the flag bars with the engine's reason."""
    facilities = list(Facility.objects.filter(active=True).order_by("name"))
    profiles = list(
        RadiologistProfile.objects.filter(user__is_active=True)
        .select_related("user")
        .prefetch_related(
            Prefetch("privileges", queryset=FacilityPrivilege.objects.order_by("-applied_on", "-id"))
        )
        .order_by("user__display_name", "user__username")
    )
    flags = credential_flags(at, [p.user_id for p in profiles])
    rows = []
    for profile in profiles:
        by_facility: dict[int, FacilityPrivilege] = {}
        for p in profile.privileges.all():  # newest first: keep the open one, else the latest
            held = by_facility.get(p.facility_id)
            if held is None or (
                p.status in OPEN_PRIVILEGE_STATUSES and held.status not in OPEN_PRIVILEGE_STATUSES
            ):
                by_facility[p.facility_id] = p
        flag = flags.get(profile.user_id)
        cells = [_cell(by_facility.get(f.pk), f, at) for f in facilities]
        if flag:
            cells = [_flagged(c, flag) for c in cells]
        rows.append((profile, cells, flag))
    return facilities, rows


def _flagged(cell: MatrixCell, flag: CredentialFlag) -> MatrixCell:
    if cell.privilege is None or cell.privilege.facility_id not in flag.barred:
        return cell
    return replace(cell, flag=flag.barred[cell.privilege.facility_id])


def _cell(privilege: FacilityPrivilege | None, facility: Facility, at: datetime) -> MatrixCell:
    if privilege is None:
        return MatrixCell(None, "none", "—", None)
    if privilege.status in (PrivilegeStatus.APPLIED, PrivilegeStatus.IN_REVIEW):
        return MatrixCell(privilege, "pending", privilege.get_status_display(), None)
    if privilege.status not in GRANTED_PRIVILEGE_STATUSES:
        return MatrixCell(privilege, "closed", privilege.get_status_display(), None)
    days_left = (privilege.expires_on - facility_day(facility, at)).days
    if days_left < 0:
        return MatrixCell(privilege, "expired", f"expired {privilege.expires_on:%Y-%m-%d}", days_left)
    tone = "urgent" if days_left <= 30 else "soon" if days_left <= 90 else "ok"
    proxy = " (proxy)" if privilege.status == PrivilegeStatus.APPROVED_BY_PROXY else ""
    return MatrixCell(privilege, tone, f"{days_left} d{proxy}", days_left)


@dataclass(frozen=True)
class Application:
    privilege: FacilityPrivilege
    missing: list[str]
    days_open: int


def applications_queue(at: datetime) -> list[Application]:
    """Open applications (applied, in review), oldest first, with their missing required items."""
    privileges = (
        FacilityPrivilege.objects.filter(status__in=(PrivilegeStatus.APPLIED, PrivilegeStatus.IN_REVIEW))
        .select_related("profile__user", "facility")
        .prefetch_related(_checklist_prefetch())
        .order_by("applied_on", "id")
    )
    return [
        Application(
            privilege=p,
            missing=[i.label for i in p.checklist.all() if i.required and not i.is_complete],
            days_open=(facility_day(p.facility, at) - p.applied_on).days,
        )
        for p in privileges
    ]


@dataclass(frozen=True)
class ExpiringItem:
    kind: str  # licence | privilege | board | dea | malpractice
    pk: int
    profile: RadiologistProfile
    label: str  # "IL licence 036-123456", "privileges at Lakeshore Medical Center"
    expires_on: date
    days_left: int
    facility: Facility | None = None

    @property
    def overdue(self) -> bool:
        return self.days_left < 0

    @property
    def window(self) -> int | None:
        """The smallest notice window (90/60/30 by default) it falls in; None when overdue or further away."""
        fitting = [w for w in expiry_windows() if 0 <= self.days_left <= w]
        return min(fitting) if fitting else None

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.pk}"


def expiring_items(
    at: datetime, *, within_days: int = 90, include_overdue: bool = True
) -> list[ExpiringItem]:
    """Credentials in force that expire within ``within_days`` (and, if asked, those already past
    expiry and not renewed), soonest first. A credential superseded by a later one of the same kind
    (a renewed licence entered as a new row) is left out."""
    day = at.astimezone(LATEST_US_ZONE).date()
    horizon = day + timedelta(days=within_days)
    items = [
        *_licence_items(day, horizon),
        *_privilege_items(at, within_days),
        *_simple_items(
            BoardCertification,
            "board",
            day,
            horizon,
            label=lambda b: f"{b.board} {b.specialty} certificate",
            group=lambda b: (b.board, b.specialty),
        ),
        *_simple_items(
            DeaRegistration,
            "dea",
            day,
            horizon,
            label=lambda d: f"DEA registration {d.number} ({d.state})",
            group=lambda d: d.state,
        ),
        *_simple_items(
            MalpracticeCoverage,
            "malpractice",
            day,
            horizon,
            label=lambda m: f"malpractice cover ({m.carrier})",
            group=lambda m: "malpractice",
        ),
    ]
    if not include_overdue:
        items = [i for i in items if not i.overdue]
    return sorted(items, key=lambda i: (i.days_left, i.profile.user.username, i.label))


def _licence_items(day: date, horizon: date) -> list[ExpiringItem]:
    licences = StateLicence.objects.filter(
        status=LicenceStatus.ACTIVE, expires_on__lte=horizon
    ).select_related("profile__user")
    later = {
        (lic.profile_id, lic.state): lic.expires_on
        for lic in StateLicence.objects.filter(status=LicenceStatus.ACTIVE, expires_on__gt=horizon).only(
            "profile_id", "state", "expires_on"
        )
    }
    return [
        ExpiringItem(
            "licence",
            lic.pk,
            lic.profile,
            f"{lic.state} licence {lic.number}",
            lic.expires_on,
            (lic.expires_on - day).days,
        )
        for lic in licences
        if (lic.profile_id, lic.state) not in later
    ]


def _privilege_items(at: datetime, within_days: int) -> list[ExpiringItem]:
    items = []
    privileges = FacilityPrivilege.objects.filter(status__in=GRANTED_PRIVILEGE_STATUSES).select_related(
        "profile__user", "facility"
    )
    for p in privileges:
        days_left = (p.expires_on - facility_day(p.facility, at)).days
        if days_left <= within_days:
            items.append(
                ExpiringItem(
                    "privilege",
                    p.pk,
                    p.profile,
                    f"privileges at {p.facility.name}",
                    p.expires_on,
                    days_left,
                    p.facility,
                )
            )
    return items


def _simple_items(model, kind: str, day: date, horizon: date, *, label, group) -> list[ExpiringItem]:
    """Records without a status: the newest of each group (same board and specialty, same state …)
    is the one in force; older ones were renewed by it."""
    rows = list(model.objects.filter(expires_on__isnull=False).select_related("profile__user"))
    newest: dict[tuple, date] = {}
    for row in rows:
        key = (row.profile_id, group(row))
        newest[key] = max(newest.get(key, date.min), row.expires_on)
    return [
        ExpiringItem(kind, row.pk, row.profile, label(row), row.expires_on, (row.expires_on - day).days)
        for row in rows
        if row.expires_on <= horizon and row.expires_on == newest[(row.profile_id, group(row))]
    ]


def notifications_for(user, *, unread_only: bool = False) -> QuerySet[Notification]:
    notifications = Notification.objects.filter(recipient=user)
    return notifications.filter(read_at__isnull=True) if unread_only else notifications
