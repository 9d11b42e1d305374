"""Writes to credentialing records: keyword-only, atomic, one noun_verb per action.

Permission is checked by the caller through ``credentialing.selectors`` (views and the API fetch with
``access_…`` helpers); these functions enforce the records' own rules — validation, the privilege
workflow, a complete checklist before approval — and record *who* did it on the row. django-auditlog
records every change with before/after (credentialing/audit.py)."""

from __future__ import annotations

import calendar
import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import models, transaction
from django.utils import timezone

from credentialing.documents import check_content, check_size
from credentialing.models import (
    DEFAULT_CHECKLIST,
    OPEN_PRIVILEGE_STATUSES,
    BoardCertification,
    DeaRegistration,
    Document,
    FacilityChecklistRequirement,
    FacilityCredentialing,
    FacilityPrivilege,
    Fellowship,
    MalpracticeCoverage,
    PrimarySourceVerification,
    PrivilegeChecklistItem,
    PrivilegeStatus,
    RadiologistProfile,
    StateLicence,
    Subspecialty,
)
from facilities.models import Facility
from imaging.storage import encrypted_delete, encrypted_write


def _save(instance: models.Model, fields: dict) -> models.Model:
    """Set fields, validate (field validators and the model's constraints), save."""
    for name, value in fields.items():
        setattr(instance, name, value)
    instance.full_clean()
    instance.save()
    return instance


# --- the dossier ------------------------------------------------------------------------------


@transaction.atomic
def profile_open(
    *, actor, user, npi: str = "", subspecialties: Iterable[Subspecialty] = ()
) -> RadiologistProfile:
    """Open a radiologist's dossier (or return the one they have)."""
    profile = RadiologistProfile.objects.filter(user=user).first()
    if profile is None:
        profile = _save(RadiologistProfile(user=user), {"npi": npi})
        profile.subspecialties.set(subspecialties)
    return profile


@transaction.atomic
def profile_update(
    *, actor, profile: RadiologistProfile, npi: str, subspecialties: Iterable[Subspecialty]
) -> RadiologistProfile:
    _save(profile, {"npi": npi})
    profile.subspecialties.set(subspecialties)
    return profile


@transaction.atomic
def licence_record(*, actor, profile: RadiologistProfile, **fields) -> StateLicence:
    return _save(StateLicence(profile=profile), fields)


@transaction.atomic
def licence_update(*, actor, licence: StateLicence, **fields) -> StateLicence:
    return _save(licence, fields)


@transaction.atomic
def board_record(*, actor, profile: RadiologistProfile, **fields) -> BoardCertification:
    return _save(BoardCertification(profile=profile), fields)


@transaction.atomic
def board_update(*, actor, board: BoardCertification, **fields) -> BoardCertification:
    return _save(board, fields)


@transaction.atomic
def fellowship_record(*, actor, profile: RadiologistProfile, **fields) -> Fellowship:
    return _save(Fellowship(profile=profile), fields)


@transaction.atomic
def fellowship_update(*, actor, fellowship: Fellowship, **fields) -> Fellowship:
    return _save(fellowship, fields)


@transaction.atomic
def dea_record(*, actor, profile: RadiologistProfile, **fields) -> DeaRegistration:
    return _save(DeaRegistration(profile=profile), fields)


@transaction.atomic
def dea_update(*, actor, dea: DeaRegistration, **fields) -> DeaRegistration:
    return _save(dea, fields)


@transaction.atomic
def malpractice_record(*, actor, profile: RadiologistProfile, **fields) -> MalpracticeCoverage:
    return _save(MalpracticeCoverage(profile=profile), fields)


@transaction.atomic
def malpractice_update(*, actor, coverage: MalpracticeCoverage, **fields) -> MalpracticeCoverage:
    return _save(coverage, fields)


@transaction.atomic
def credential_verify(
    *,
    actor,
    credential: PrimarySourceVerification,
    method: str,
    document: Document | None = None,
    note: str = "",
    verified_at: datetime | None = None,
) -> PrimarySourceVerification:
    """Record a primary-source verification of a licence, board, fellowship, DEA or malpractice
    record: who (the actor), when, how, and the evidence document."""
    return _save(
        credential,
        {
            "verified_by": actor,
            "verified_at": verified_at or timezone.now(),
            "verification_method": method,
            "verification_document": document,
            "verification_note": note,
        },
    )


def document_upload(
    *, actor, profile: RadiologistProfile, upload: UploadedFile, kind: str, title: str
) -> Document:
    """Store an uploaded document encrypted under ``credentialing/<profile id>/<uuid>``.

    The size is checked before the file is read and the type from its first bytes; the encrypted
    file is removed again if the row cannot be written. A radiologist's own upload (a renewal)
    tells credentialing staff in-app."""
    check_size(upload.size)
    content = upload.read()
    check_size(len(content))  # the size the client declared is a claim too
    content_type = check_content(content)
    doc_uuid = uuid.uuid4()
    stored = encrypted_write(f"credentialing/{profile.pk}/{doc_uuid}", content)
    try:
        with transaction.atomic():
            document = _save(
                Document(uuid=doc_uuid, profile=profile, uploaded_by=actor),
                {
                    "kind": kind,
                    "title": title.strip() or upload.name,
                    "original_filename": (upload.name or "upload")[:255],
                    "content_type": content_type,
                    "size_bytes": stored.size_bytes,
                    "sha256": hashlib.sha256(content).hexdigest(),
                    "storage_path": stored.relative_path,
                    "storage_key_id": stored.key_id,
                },
            )
            if actor.pk == profile.user_id:
                from credentialing.notifications import staff_notify

                staff_notify(
                    key=f"document:{document.pk}:uploaded",
                    message=f"{profile} uploaded a document for review: {document.title}",
                    url=f"/credentialing/profiles/{profile.pk}/#documents",
                )
    except BaseException:
        encrypted_delete(stored.relative_path)
        raise
    return document


# --- facility settings ------------------------------------------------------------------------


@transaction.atomic
def facility_credentialing_update(*, actor, facility: Facility, **fields) -> FacilityCredentialing:
    settings_row, _ = FacilityCredentialing.objects.get_or_create(facility=facility)
    return _save(settings_row, fields)


@transaction.atomic
def facility_verification_policy_set(
    *, actor, facility: Facility, reads_before_verification: bool
) -> Facility:
    """Whether readers may read at ``facility`` before their licence in its state and a malpractice
    cover are verified (the eligibility engine's verification rule). On the facility row, beside
    ``accepts_general_readers``, so the engine reads it with the facility's other facts."""
    facility.reads_before_verification = reads_before_verification
    facility.save(update_fields=["reads_before_verification"])
    return facility


@transaction.atomic
def facility_requirements_set(
    *, actor, facility: Facility, labels: Iterable[str]
) -> list[FacilityChecklistRequirement]:
    """Replace the facility's required checklist items (order as given). Open applications keep the
    items they were opened with: a checklist is the one the application was made against."""
    wanted = [label.strip() for label in labels if label.strip()]
    wanted = list(dict.fromkeys(wanted))
    FacilityChecklistRequirement.objects.filter(facility=facility).exclude(label__in=wanted).delete()
    rows = []
    for position, label in enumerate(wanted):
        row, _ = FacilityChecklistRequirement.objects.update_or_create(
            facility=facility, label=label, defaults={"position": position}
        )
        rows.append(row)
    return rows


def facility_reappointment_months(facility: Facility) -> int:
    row = FacilityCredentialing.objects.filter(facility=facility).first()
    return (
        row.reappointment_months
        if row
        else FacilityCredentialing._meta.get_field("reappointment_months").default
    )


def required_checklist_labels(facility: Facility) -> list[str]:
    labels = list(
        FacilityChecklistRequirement.objects.filter(facility=facility)
        .order_by("position")
        .values_list("label", flat=True)
    )
    return labels or list(DEFAULT_CHECKLIST)


# --- privileges -------------------------------------------------------------------------------


class PrivilegeTransitionError(ValidationError):
    """A status change the workflow does not allow, with the sentence to show."""


# applied → in_review → approved | approved_by_proxy | denied; a grant later lapses.
TRANSITIONS: dict[str, frozenset[str]] = {
    PrivilegeStatus.APPLIED: frozenset({PrivilegeStatus.IN_REVIEW, PrivilegeStatus.DENIED}),
    PrivilegeStatus.IN_REVIEW: frozenset(
        {PrivilegeStatus.APPROVED, PrivilegeStatus.APPROVED_BY_PROXY, PrivilegeStatus.DENIED}
    ),
    PrivilegeStatus.APPROVED: frozenset({PrivilegeStatus.LAPSED}),
    PrivilegeStatus.APPROVED_BY_PROXY: frozenset({PrivilegeStatus.LAPSED}),
    PrivilegeStatus.DENIED: frozenset(),
    PrivilegeStatus.LAPSED: frozenset(),
}


def _transition(privilege: FacilityPrivilege, target: str) -> None:
    # Re-read under a row lock: two staff pressing "approve" and "deny" at once must not both win.
    current = (
        FacilityPrivilege.objects.select_for_update().values_list("status", flat=True).get(pk=privilege.pk)
    )
    if target not in TRANSITIONS[current]:
        raise PrivilegeTransitionError(
            f"Privileges that are {PrivilegeStatus(current).label.lower()} cannot become "
            f"{PrivilegeStatus(target).label.lower()}."
        )
    privilege.status = current


@transaction.atomic
def privilege_apply(
    *,
    actor,
    profile: RadiologistProfile,
    facility: Facility,
    applied_on: date | None = None,
    scope_subspecialties: Iterable[Subspecialty] = (),
    scope_modalities: Iterable[str] = (),
) -> FacilityPrivilege:
    """Open an application, with the facility's required checklist items."""
    if FacilityPrivilege.objects.filter(
        profile=profile, facility=facility, status__in=OPEN_PRIVILEGE_STATUSES
    ).exists():
        raise ValidationError(f"{profile} already has an open application or grant at {facility.name}.")
    privilege = _save(
        FacilityPrivilege(profile=profile, facility=facility),
        {"applied_on": applied_on or timezone.localdate(), "scope_modalities": list(scope_modalities)},
    )
    privilege.scope_subspecialties.set(scope_subspecialties)
    PrivilegeChecklistItem.objects.bulk_create(
        PrivilegeChecklistItem(privilege=privilege, label=label, position=i)
        for i, label in enumerate(required_checklist_labels(facility))
    )
    return privilege


@transaction.atomic
def privilege_review_start(*, actor, privilege: FacilityPrivilege) -> FacilityPrivilege:
    _transition(privilege, PrivilegeStatus.IN_REVIEW)
    return _save(privilege, {"status": PrivilegeStatus.IN_REVIEW})


def add_months(day: date, months: int) -> date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def default_expiry(facility: Facility, granted_on: date) -> date:
    """An appointment of N months from 1 Jan 2026 runs through the day before the anniversary."""
    return add_months(granted_on, facility_reappointment_months(facility)) - timedelta(days=1)


def _require_checklist_complete(privilege: FacilityPrivilege) -> None:
    missing = list(
        privilege.checklist.filter(required=True, completed_at__isnull=True).values_list("label", flat=True)
    )
    if missing:
        raise PrivilegeTransitionError(
            f"{len(missing)} required checklist item{'s are' if len(missing) > 1 else ' is'} still open: "
            f"{', '.join(missing)}. Complete them before approving."
        )


@transaction.atomic
def privilege_approve(
    *, actor, privilege: FacilityPrivilege, granted_on: date, expires_on: date | None = None
) -> FacilityPrivilege:
    _transition(privilege, PrivilegeStatus.APPROVED)
    _require_checklist_complete(privilege)
    return _save(
        privilege,
        {
            "status": PrivilegeStatus.APPROVED,
            "granted_on": granted_on,
            "expires_on": expires_on or default_expiry(privilege.facility, granted_on),
            "decided_by": actor,
            "decided_at": timezone.now(),
        },
    )


@transaction.atomic
def privilege_approve_by_proxy(
    *,
    actor,
    privilege: FacilityPrivilege,
    distant_site_name: str,
    distant_site_approved_on: date,
    granted_on: date,
    expires_on: date | None = None,
) -> FacilityPrivilege:
    """Grant on the distant-site hospital's privileging decision (credentialing by proxy), which the
    facility's bylaws and a written agreement must allow."""
    _transition(privilege, PrivilegeStatus.APPROVED_BY_PROXY)
    agreement = FacilityCredentialing.objects.filter(facility=privilege.facility, accepts_proxy=True).exists()
    if not agreement:
        raise PrivilegeTransitionError(
            f"{privilege.facility.name} has no credentialing-by-proxy agreement on record. "
            "Record it in the facility's credentialing settings first, or approve normally."
        )
    _require_checklist_complete(privilege)
    return _save(
        privilege,
        {
            "status": PrivilegeStatus.APPROVED_BY_PROXY,
            "distant_site_name": distant_site_name.strip(),
            "distant_site_approved_on": distant_site_approved_on,
            "granted_on": granted_on,
            "expires_on": expires_on or default_expiry(privilege.facility, granted_on),
            "decided_by": actor,
            "decided_at": timezone.now(),
        },
    )


@transaction.atomic
def privilege_deny(*, actor, privilege: FacilityPrivilege, note: str) -> FacilityPrivilege:
    _transition(privilege, PrivilegeStatus.DENIED)
    return _save(
        privilege,
        {
            "status": PrivilegeStatus.DENIED,
            "status_note": note,
            "decided_by": actor,
            "decided_at": timezone.now(),
        },
    )


@transaction.atomic
def privilege_lapse(*, actor, privilege: FacilityPrivilege, note: str) -> FacilityPrivilege:
    """End a grant (expiry not renewed, resignation, facility decision). Takes effect at once."""
    _transition(privilege, PrivilegeStatus.LAPSED)
    return _save(
        privilege,
        {
            "status": PrivilegeStatus.LAPSED,
            "status_note": note,
            "decided_by": actor,
            "decided_at": timezone.now(),
        },
    )


@transaction.atomic
def privilege_reappoint(
    *, actor, privilege: FacilityPrivilege, granted_on: date, expires_on: date | None = None
) -> FacilityPrivilege:
    """Renew a grant in force for a new appointment period (the row keeps its history in the audit log)."""
    current = (
        FacilityPrivilege.objects.select_for_update().values_list("status", flat=True).get(pk=privilege.pk)
    )
    if current not in (PrivilegeStatus.APPROVED, PrivilegeStatus.APPROVED_BY_PROXY):
        raise PrivilegeTransitionError(
            "Only approved privileges are reappointed; open a new application instead."
        )
    return _save(
        privilege,
        {
            "granted_on": granted_on,
            "expires_on": expires_on or default_expiry(privilege.facility, granted_on),
            "decided_by": actor,
            "decided_at": timezone.now(),
        },
    )


@transaction.atomic
def privilege_scope_set(
    *, actor, privilege: FacilityPrivilege, subspecialties: Iterable[Subspecialty], modalities: Iterable[str]
) -> FacilityPrivilege:
    _save(privilege, {"scope_modalities": sorted(set(modalities))})
    privilege.scope_subspecialties.set(subspecialties)
    return privilege


@transaction.atomic
def checklist_item_complete(*, actor, item: PrivilegeChecklistItem, note: str = "") -> PrivilegeChecklistItem:
    if item.is_complete:
        return item
    return _save(item, {"completed_by": actor, "completed_at": timezone.now(), "note": note or item.note})


@transaction.atomic
def checklist_item_reopen(*, actor, item: PrivilegeChecklistItem) -> PrivilegeChecklistItem:
    if item.privilege.status not in (PrivilegeStatus.APPLIED, PrivilegeStatus.IN_REVIEW):
        raise ValidationError("The checklist of a decided application cannot change.")
    return _save(item, {"completed_by": None, "completed_at": None})


@transaction.atomic
def checklist_item_add(*, actor, privilege: FacilityPrivilege, label: str) -> PrivilegeChecklistItem:
    if privilege.status not in (PrivilegeStatus.APPLIED, PrivilegeStatus.IN_REVIEW):
        raise ValidationError("The checklist of a decided application cannot change.")
    position = privilege.checklist.count()
    return _save(PrivilegeChecklistItem(privilege=privilege), {"label": label.strip(), "position": position})


# --- notifications --------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpiryRun:
    notified: int  # new notifications created
    emails: int
    lapsed: int  # grants and licences whose status was closed


def expiries_check(*, at: datetime) -> ExpiryRun:
    """The daily check: tell credentialing staff what expires within 90/60/30 days and what is
    overdue (once per item, threshold and expiry date), then close grants and licences past expiry,
    and tell them of readers whose credentials are unverified or whose cover is missing or lapsed
    (once per reader and set of problems)."""
    from credentialing.notifications import expiries_notify, overdue_close, verification_notify

    notified, emails = expiries_notify(at=at)
    lapsed = overdue_close(at=at)
    notified += verification_notify(at=at)
    return ExpiryRun(notified=notified, emails=emails, lapsed=lapsed)
