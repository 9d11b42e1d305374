"""Demo data for ``make demo``: three client facilities in two states, nine radiologists (one a
new locum whose licence is not yet verified, so the MSO's flags have something to show), one
person for each other role. Loading is idempotent — run it twice and nothing is duplicated.

Everyone signs in with DEMO_PASSWORD. Radiologists and the medical director also need an
authenticator code: ``manage.py totp_code USERNAME`` prints the current one (demo devices only)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone as django_timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from accounts.roles import Role
from credentialing.demo import credentialing_demo_load
from credentialing.models import RadiologistProfile, Subspecialty
from credentialing.services import expiries_check
from facilities.models import DicomSender, Facility, FacilityKind, Hl7Sender
from facilities.services import facility_admin_grant
from interfaces.emr_simulator import emr_simulator_running
from radiology.demo_reading import reading_demo_load
from worklist.demo import rota_demo_load

DEMO_PASSWORD = "readroom-demo"  # noqa: S105  (printed on purpose: demo only)
DEMO_DEVICE_NAME = "Demo authenticator"


@dataclass(frozen=True)
class DemoFacility:
    code: str
    name: str
    state: str
    timezone: str
    kind: str
    sla_overrides: dict[str, int] = field(default_factory=dict)
    hl7_sender: tuple[str, str] = ("", "")  # MSH-3, MSH-4
    dicom_ae_titles: tuple[str, ...] = ()


@dataclass(frozen=True)
class DemoPerson:
    username: str
    display_name: str
    role: Role
    subspecialties: tuple[str, ...] = ()
    npi: str = ""
    administers: tuple[str, ...] = ()


FACILITIES = (
    DemoFacility(
        "CHI-L1",
        "Lakeshore Medical Center",
        "IL",
        "America/Chicago",
        FacilityKind.LEVEL1_TRAUMA,
        hl7_sender=("EPIC_RAD", "LAKESHORE"),
        dicom_ae_titles=("LAKESHORE_CT1", "LAKESHORE_MR1"),
    ),
    DemoFacility(
        "IL-PRAIRIE",
        "Prairie Valley Critical Access Hospital",
        "IL",
        "America/Chicago",
        FacilityKind.CRITICAL_ACCESS,
        {"sla_asap_minutes": 180},
        hl7_sender=("MEDITECH", "PRAIRIEVALLEY"),
        dicom_ae_titles=("PRAIRIE_CT",),
    ),
    DemoFacility(
        "WI-LAKEVIEW",
        "Lakeview Outpatient Imaging",
        "WI",
        "America/Chicago",
        FacilityKind.OUTPATIENT_IMAGING,
        {"sla_routine_minutes": 48 * 60},
        hl7_sender=("RIS_LV", "LAKEVIEW"),
        dicom_ae_titles=("LAKEVIEW_MR", "LAKEVIEW_XR"),
    ),
)

PEOPLE = (
    DemoPerson("dr.neuro", "Priya Raman, MD", Role.RADIOLOGIST, ("neuro",), "1649251780"),
    DemoPerson("dr.msk", "Marcus Kline, MD", Role.RADIOLOGIST, ("msk",), "1386645238"),
    DemoPerson("dr.body", "Elena Sorensen, MD", Role.RADIOLOGIST, ("body",), "1912380465"),
    DemoPerson("dr.chest", "Samuel Okafor, MD", Role.RADIOLOGIST, ("chest",), "1518047327"),
    DemoPerson("dr.peds", "Hannah Lindqvist, MD", Role.RADIOLOGIST, ("pediatric",), "1073529664"),
    DemoPerson("dr.breast", "Grace Whitaker, MD", Role.RADIOLOGIST, ("breast",), "1780621852"),
    DemoPerson("dr.er", "Luis Ortega, MD", Role.RADIOLOGIST, ("general",), "1295837710"),
    DemoPerson("dr.nighthawk", "Aisha Bello, MD", Role.RADIOLOGIST, ("general", "neuro"), "1457394012"),
    # a locum starting at Lakeshore: privileged, on the rota, but not eligible until verified
    DemoPerson("dr.locum", "Jonah Reiter, MD", Role.RADIOLOGIST, ("general",), "1467502914"),
    DemoPerson("director", "Dana Whitfield, MD", Role.MEDICAL_DIRECTOR),
    DemoPerson("mso", "Mary Collins", Role.CREDENTIALING),
    DemoPerson("admin.chicago", "Carlos Mendez", Role.FACILITY_ADMIN, administers=("CHI-L1",)),
    DemoPerson("admin.wisconsin", "Karen Olson", Role.FACILITY_ADMIN, administers=("WI-LAKEVIEW",)),
    DemoPerson("ops", "Omar Diaz", Role.OPERATIONS),
)

# Roles that use the Django admin for their records until their own pages exist.
_STAFF_ROLES = {Role.FACILITY_ADMIN, Role.OPERATIONS, Role.CREDENTIALING}


def _demo_totp_key(username: str) -> str:
    """A fixed key per demo user, so reloading keeps authenticators that people already scanned."""
    return hashlib.sha256(f"readroom-demo-totp:{username}".encode()).hexdigest()[:40]


class DemoRefused(Exception):
    """The demo may not be loaded here (production settings)."""


def demo_refused_reason() -> str | None:
    """Why the demo may not be loaded, or None. The demo's passwords are published and its TOTP
    keys can be computed from the source (issue 15 §9): under the production settings they would
    be working logins to a real installation."""
    if getattr(settings, "READROOM_PRODUCTION", False):
        return (
            "load_demo refuses to run with the production settings (radiology.settings.production): "
            "the demo's passwords and authenticator keys are published. Use a development or "
            "embedded install for the demo."
        )
    return None


def demo_load() -> dict[str, int]:
    """Load the demo. The EMR simulator listens while it loads (and until the commit, when the
    earlier reads' ORUs go out), so they are delivered and acknowledged rather than refused."""
    if (reason := demo_refused_reason()) is not None:
        raise DemoRefused(reason)
    with emr_simulator_running(settings.READROOM_EMR_SIM_PORT):
        return _demo_load()


@transaction.atomic
def _demo_load() -> dict[str, int]:
    created = {"facilities": 0, "users": 0}
    facilities = {}
    for spec in FACILITIES:
        facility, was_created = Facility.objects.update_or_create(
            code=spec.code,
            defaults={
                "name": spec.name,
                "state": spec.state,
                "timezone": spec.timezone,
                "kind": spec.kind,
                **spec.sla_overrides,
            },
        )
        facilities[spec.code] = facility
        created["facilities"] += was_created
        Hl7Sender.objects.update_or_create(
            sending_application=spec.hl7_sender[0],
            sending_facility=spec.hl7_sender[1],
            defaults={"facility": facility},
        )
        for ae_title in spec.dicom_ae_titles:
            DicomSender.objects.update_or_create(ae_title=ae_title, defaults={"facility": facility})
    for person in PEOPLE:
        created["users"] += _person_load(person, facilities)
    # licences and privileges, then the rota (templates materialised), so readers are eligible now
    credentialing_demo_load()
    # the daily expiry check at once, so a fresh demo's MSO sees the credential 20 days from expiry
    expiries_check(at=django_timezone.now())
    rota_demo_load()
    # reporting settings, the EMR simulator as ORU endpoint, earlier signed reads, peer review, QA
    reading_demo_load()
    return created


def _person_load(person: DemoPerson, facilities: dict[str, Facility]) -> bool:
    user, was_created = User.objects.update_or_create(
        username=person.username,
        defaults={
            "display_name": person.display_name,
            "email": f"{person.username}@readroom.example",
            "is_staff": person.role in _STAFF_ROLES,
            "is_active": True,
        },
    )
    # a new user has no password to check: checking it would still run Argon2 once (Django evens out
    # the timing of unusable passwords), ~0.5 s per person on a loaded machine for nothing
    if was_created or not user.check_password(DEMO_PASSWORD):
        user.set_password(DEMO_PASSWORD)
        user.save(update_fields=["password"])
    user.groups.add(Group.objects.get(name=person.role.value))
    for code in person.administers:
        facility_admin_grant(user=user, facility=facilities[code])
    if person.role == Role.RADIOLOGIST:
        profile, _ = RadiologistProfile.objects.update_or_create(user=user, defaults={"npi": person.npi})
        profile.subspecialties.set(Subspecialty.objects.filter(code__in=person.subspecialties))
    if person.role in (Role.RADIOLOGIST, Role.MEDICAL_DIRECTOR):
        TOTPDevice.objects.update_or_create(
            user=user,
            name=DEMO_DEVICE_NAME,
            defaults={"key": _demo_totp_key(person.username), "confirmed": True},
        )
    return was_created


def demo_logins_text() -> str:
    width = max(len(p.username) for p in PEOPLE)
    lines = [f"  {p.username:<{width}}  {p.role.value:<20} {p.display_name}" for p in PEOPLE]
    return "\n".join(
        [
            f"Logins (password for all: {DEMO_PASSWORD}):",
            *lines,
            "Radiologists and the medical director also enter an authenticator code:",
            "  .venv/bin/python manage.py totp_code dr.neuro   (or scan the key from Security)",
        ]
    )
