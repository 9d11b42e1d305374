"""Demo credentials for ``make demo``: licences, boards, privileges (one by proxy, one application
still open), a few expiries close enough that the workspace, the expiry windows and the coverage
forecast have something to show (the rota the forecast reads is ``worklist.demo``'s templates), and
one reader the MSO has not finished with (``AWAITING_VERIFICATION``): flagged on the matrix and the
forecast, notified, and refused by the eligibility engine until verified.

Idempotent: rows are keyed by licence number / facility, so loading twice changes nothing. Dates
are relative to today, so the demo looks the same whenever it is loaded. Call it after the demo
users and facilities exist (``radiology.demo.demo_load``)."""

from __future__ import annotations

from datetime import date, timedelta
from zoneinfo import ZoneInfo

from django.db import transaction
from django.utils import timezone

from accounts.models import User
from credentialing.models import (
    BoardCertification,
    FacilityCredentialing,
    FacilityPrivilege,
    LicenceStatus,
    MalpracticeCoverage,
    PrivilegeStatus,
    RadiologistProfile,
    StateLicence,
    Subspecialty,
    VerificationMethod,
)
from credentialing.services import checklist_item_complete, privilege_apply, required_checklist_labels
from facilities.models import Facility

CHICAGO = ZoneInfo("America/Chicago")  # the demo hospitals' zone

# username → licences (state, number, days until expiry), privileges (facility code, days until expiry)
READERS = {
    "dr.neuro": ([("IL", "036-142857", 600), ("WI", "58231-20", 700)], [("CHI-L1", 400), ("IL-PRAIRIE", 75)]),
    "dr.msk": ([("WI", "61842-20", 40), ("IL", "036-155210", 500)], [("WI-LAKEVIEW", 500), ("CHI-L1", 300)]),
    "dr.body": ([("IL", "036-160044", 800)], [("CHI-L1", 650)]),
    "dr.chest": ([("IL", "036-171932", 25)], [("CHI-L1", 200)]),
    "dr.peds": ([("IL", "036-180775", 900)], [("CHI-L1", 700)]),
    "dr.breast": ([("WI", "63310-20", 900)], [("WI-LAKEVIEW", 800)]),
    "dr.er": (
        [("IL", "036-190311", 365), ("WI", "64012-20", 365)],
        [("IL-PRAIRIE", 420), ("WI-LAKEVIEW", 20), ("CHI-L1", 610)],
    ),
    "dr.nighthawk": (
        [("IL", "036-199870", 1000), ("WI", "65521-20", 1000)],
        [("CHI-L1", 730), ("IL-PRAIRIE", 730), ("WI-LAKEVIEW", 730)],
    ),
    "dr.locum": ([("IL", "036-204518", 700)], [("CHI-L1", 700)]),
}
# username → days since their malpractice cover lapsed: a locum whose IL licence the MSO has entered
# but not yet verified with the state board, and whose previous group's cover ended without the new
# carrier's certificate in yet. Lakeshore requires verification (the default), so the engine refuses
# them there with that reason, though the privileges are approved and the rota has them on.
AWAITING_VERIFICATION = {"dr.locum": 12}
UNVERIFIED = {"verified_by": None, "verified_at": None, "verification_method": ""}


@transaction.atomic
def credentialing_demo_load(today: date | None = None) -> int:
    """Load the demo credentials; returns how many radiologists were given any."""
    today = today or timezone.localdate(timezone=CHICAGO)  # the demo hospitals' date, not UTC's
    facilities = {f.code: f for f in Facility.objects.all()}
    FacilityCredentialing.objects.update_or_create(
        facility=facilities["CHI-L1"],
        defaults={
            "mso_contact_name": "Pat Reyes",
            "mso_contact_email": "mso@lakeshore.example",
            "accepts_proxy": True,
        },
    )
    loaded = 0
    # Verified by the demo MSO with the boards and carriers: facilities require it before reading
    # (``Facility.reads_before_verification`` off by default).
    verified = {
        "verified_by": User.objects.filter(username="mso").first(),
        "verified_at": timezone.now() - timedelta(days=650),
        "verification_method": VerificationMethod.SOURCE_WEBSITE,
    }
    for username, (licences, privileges) in READERS.items():
        profile = RadiologistProfile.objects.filter(user__username=username).first()
        if profile is None:
            continue
        loaded += 1
        lapsed_days = AWAITING_VERIFICATION.get(username)
        licence_verification = UNVERIFIED if lapsed_days is not None else verified
        # the cover in force for a year and more; the locum's ended ``lapsed_days`` ago
        cover_ends = today + timedelta(days=430 if lapsed_days is None else -lapsed_days)
        for state, number, days in licences:
            StateLicence.objects.update_or_create(
                state=state,
                number=number,
                defaults={
                    "profile": profile,
                    "status": LicenceStatus.ACTIVE,
                    "issued_on": today - timedelta(days=700),
                    "expires_on": today + timedelta(days=days),
                    **licence_verification,
                },
            )
        MalpracticeCoverage.objects.update_or_create(
            profile=profile,
            policy_number=f"MP-{number}",
            defaults={
                "carrier": "Medical Protective",
                "per_claim_limit": 1_000_000,
                "aggregate_limit": 3_000_000,
                "effective_on": cover_ends - timedelta(days=730),
                "expires_on": cover_ends,
                **verified,
            },
        )
        BoardCertification.objects.get_or_create(
            profile=profile,
            board="ABR",
            specialty="Diagnostic Radiology",
            defaults={"issued_on": today - timedelta(days=3000), "expires_on": today + timedelta(days=800)},
        )
        for code, days in privileges:
            _grant(profile, facilities[code], today, days)
    _open_application(facilities, today)
    return loaded


def _grant(profile: RadiologistProfile, facility: Facility, today: date, days: int) -> None:
    proxy = facility.code == "CHI-L1" and profile.user.username == "dr.nighthawk"
    FacilityPrivilege.objects.update_or_create(
        profile=profile,
        facility=facility,
        status__in=(PrivilegeStatus.APPROVED, PrivilegeStatus.APPROVED_BY_PROXY),
        defaults={
            "status": PrivilegeStatus.APPROVED_BY_PROXY if proxy else PrivilegeStatus.APPROVED,
            "applied_on": today - timedelta(days=400),
            "granted_on": today - timedelta(days=300),
            "expires_on": today + timedelta(days=days),
            "distant_site_name": "St. Anne's Regional Medical Center" if proxy else "",
            "distant_site_approved_on": today - timedelta(days=320) if proxy else None,
        },
    )


def _open_application(facilities: dict[str, Facility], today: date) -> None:
    profile = RadiologistProfile.objects.filter(user__username="dr.body").first()
    lakeview = facilities.get("WI-LAKEVIEW")
    if profile is None or lakeview is None:
        return
    if not FacilityPrivilege.objects.filter(profile=profile, facility=lakeview).exists():
        privilege = privilege_apply(
            actor=None,
            profile=profile,
            facility=lakeview,
            applied_on=today - timedelta(days=12),
            scope_subspecialties=Subspecialty.objects.filter(code=Subspecialty.BODY),
        )
        staff = User.objects.filter(username="mso").first()
        if staff is not None:
            first = privilege.checklist.get(label=required_checklist_labels(lakeview)[0])
            checklist_item_complete(actor=staff, item=first)
