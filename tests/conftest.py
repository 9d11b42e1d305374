"""The fixed cast of the test suite (DESIGN.md §7): people and facilities with domain names.

* ``chicago`` — Lakeshore Medical Center, Level 1 trauma, IL;  ``prairie`` — critical access, IL;
  ``lakeview`` — outpatient imaging, WI.
* ``dr_neuro_il`` — neuroradiologist (TOTP enrolled); ``dr_msk_wi`` — MSK reader, no authenticator yet;
  ``director_dana``, ``mso_mary``, ``admin_chicago`` (administers Chicago only),
  ``admin_lakeview`` (administers Lakeview only), ``ops_omar``.
"""

from __future__ import annotations

import os

import pytest
from django.contrib.auth.models import Group
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from accounts.roles import Role
from credentialing.models import RadiologistProfile, Subspecialty
from facilities.models import Facility, FacilityKind
from facilities.services import facility_admin_grant

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API + live_server

PASSWORD = "correct-horse-battery-staple"


def make_user(username: str, role: Role | None, **extra) -> User:
    user = User.objects.create_user(username=username, password=PASSWORD, **extra)
    if role is not None:
        user.groups.add(Group.objects.get(name=role.value))
    return user


def enrol_totp(user: User) -> TOTPDevice:
    return TOTPDevice.objects.create(user=user, name="phone", confirmed=True)


def current_totp(device: TOTPDevice) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    return f"{totp.token():0{device.digits}d}"


def make_radiologist(username: str, *subspecialties: str, npi: str = "") -> User:
    user = make_user(username, Role.RADIOLOGIST, display_name=f"Dr {username}")
    profile = RadiologistProfile.objects.create(user=user, npi=npi)
    profile.subspecialties.set(Subspecialty.objects.filter(code__in=subspecialties))
    return user


@pytest.fixture
def chicago(db) -> Facility:
    return Facility.objects.create(
        code="CHI-L1",
        name="Lakeshore Medical Center",
        state="IL",
        timezone="America/Chicago",
        kind=FacilityKind.LEVEL1_TRAUMA,
    )


@pytest.fixture
def prairie(db) -> Facility:
    return Facility.objects.create(
        code="IL-PRAIRIE",
        name="Prairie Valley Critical Access Hospital",
        state="IL",
        timezone="America/Chicago",
        kind=FacilityKind.CRITICAL_ACCESS,
    )


@pytest.fixture
def lakeview(db) -> Facility:
    return Facility.objects.create(
        code="WI-LAKEVIEW",
        name="Lakeview Outpatient Imaging",
        state="WI",
        timezone="America/Chicago",
        kind=FacilityKind.OUTPATIENT_IMAGING,
    )


@pytest.fixture
def dr_neuro_il(db) -> User:
    user = make_radiologist("dr_neuro_il", "neuro", npi="1649251780")
    enrol_totp(user)
    return user


@pytest.fixture
def dr_msk_wi(db) -> User:
    return make_radiologist("dr_msk_wi", "msk")


@pytest.fixture
def director_dana(db) -> User:
    user = make_user("director_dana", Role.MEDICAL_DIRECTOR)
    enrol_totp(user)
    return user


@pytest.fixture
def mso_mary(db) -> User:
    return make_user("mso_mary", Role.CREDENTIALING, is_staff=True)


@pytest.fixture
def ops_omar(db) -> User:
    return make_user("ops_omar", Role.OPERATIONS, is_staff=True)


@pytest.fixture
def admin_chicago(db, chicago) -> User:
    user = make_user("admin_chicago", None, is_staff=True)
    facility_admin_grant(user=user, facility=chicago)
    return user


@pytest.fixture
def admin_lakeview(db, lakeview) -> User:
    user = make_user("admin_lakeview", None, is_staff=True)
    facility_admin_grant(user=user, facility=lakeview)
    return user


@pytest.fixture
def verified_client(client):
    """A test client signed in through the second factor, as a signing role must be."""

    def sign_in(user: User):
        client.force_login(user)
        device = TOTPDevice.objects.get(user=user, confirmed=True)
        response = client.post("/account/verify/", {"token": current_totp(device)})
        assert response.status_code == 302, response.content
        return client

    return sign_in


def pytest_collection_modifyitems(config, items):
    # Playwright's sync API keeps an event loop running for the rest of the session once it starts,
    # which pytest-asyncio's tests cannot share: run the browser tests last.
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)


# --- credentials of the cast (added with credentialing; the fixtures above stay as they were) ------


@pytest.fixture
def neuro_il_credentials(dr_neuro_il, chicago):
    """dr_neuro_il's IL licence and approved privileges at Lakeshore (Chicago), as DESIGN.md §7 describes
    the cast. Shifts are left to each test: being on shift is part of what a test decides."""
    from datetime import date

    from credentialing.models import FacilityPrivilege, LicenceStatus, PrivilegeStatus, StateLicence

    profile = dr_neuro_il.radiologist_profile
    licence = StateLicence.objects.create(
        profile=profile,
        state="IL",
        number="036-142857",
        status=LicenceStatus.ACTIVE,
        issued_on=date(2019, 8, 1),
        expires_on=date(2027, 7, 31),
    )
    privilege = FacilityPrivilege.objects.create(
        profile=profile,
        facility=chicago,
        status=PrivilegeStatus.APPROVED,
        applied_on=date(2025, 1, 6),
        granted_on=date(2025, 3, 1),
        expires_on=date(2027, 2, 28),
    )
    return {"licence": licence, "privilege": privilege}


@pytest.fixture
def msk_wi_credentials(dr_msk_wi, lakeview):
    """dr_msk_wi's WI licence and approved privileges at Lakeview Outpatient Imaging (WI only)."""
    from datetime import date

    from credentialing.models import FacilityPrivilege, LicenceStatus, PrivilegeStatus, StateLicence

    profile = dr_msk_wi.radiologist_profile
    licence = StateLicence.objects.create(
        profile=profile,
        state="WI",
        number="61842-20",
        status=LicenceStatus.ACTIVE,
        issued_on=date(2018, 11, 1),
        expires_on=date(2027, 10, 31),
    )
    privilege = FacilityPrivilege.objects.create(
        profile=profile,
        facility=lakeview,
        status=PrivilegeStatus.APPROVED,
        applied_on=date(2024, 9, 2),
        granted_on=date(2024, 10, 1),
        expires_on=date(2027, 9, 30),
    )
    return {"licence": licence, "privilege": privilege}


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """A channel layer per test. channels-redis binds its connection locks to the event loop that
    first used them; tests run on different loops (pytest-asyncio's, async_to_sync's, the live
    server's), so a layer shared across tests fails now and then with "bound to a different loop"."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()
