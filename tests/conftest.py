"""The fixed cast of the test suite (DESIGN.md §7): people and facilities with domain names.

* ``chicago`` — Lakeshore Medical Center, Level 1 trauma, IL;  ``prairie`` — critical access, IL;
  ``lakeview`` — outpatient imaging, WI.
* ``dr_neuro_il`` — neuroradiologist (TOTP enrolled); ``dr_msk_wi`` — MSK reader, no authenticator yet;
  ``director_dana``, ``mso_mary``, ``admin_chicago`` (administers Chicago only),
  ``admin_lakeview`` (administers Lakeview only), ``ops_omar``.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime

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


# A primary-source verification as the MSO records it: facilities require one before a reader is
# eligible (``Facility.reads_before_verification`` off by default), so the cast's credentials have it.
VERIFIED = {"verified_at": datetime(2025, 1, 6, 15, 0, tzinfo=UTC), "verification_method": "source_website"}


def make_radiologist(username: str, *subspecialties: str, npi: str = "", covered: bool = True) -> User:
    """A radiologist with a reading profile and (``covered``) a verified malpractice cover in force
    until 2030; licences and privileges are each test's business."""
    from credentialing.models import MalpracticeCoverage

    user = make_user(username, Role.RADIOLOGIST, display_name=f"Dr {username}")
    profile = RadiologistProfile.objects.create(user=user, npi=npi)
    profile.subspecialties.set(Subspecialty.objects.filter(code__in=subspecialties))
    if covered:
        MalpracticeCoverage.objects.create(
            profile=profile,
            carrier="Medical Protective",
            policy_number=f"MP-{user.pk}",
            per_claim_limit=1_000_000,
            aggregate_limit=3_000_000,
            effective_on=date(2020, 1, 1),
            expires_on=date(2030, 12, 31),
            **VERIFIED,
        )
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


# The slowest modules (measured: docs/testing.md), started first so that under xdist no worker is
# left with a long one at the end while the others idle.
SLOW_FIRST = (
    "tests/test_benchmarks.py",  # one module, so one worker: ~140 s
    "tests/hardening/test_schemathesis.py",
    "tests/interfaces/test_worker_recovery.py",
    "tests/test_embedded.py",
    "tests/interfaces/test_dicom_testdata.py",
    "tests/interfaces/test_multinode.py",
    "tests/interfaces/test_outbox.py",
    "tests/test_demo.py",
    "tests/interfaces/test_hl7_listener.py",
    # browser tests still come after every other test; among them, the longest first, so the run does
    # not end on one worker walking every role's pages (~140 s) while the others idle
    "tests/e2e/test_csp_walk.py",
    "tests/e2e/test_ohif.py",
)


def _run_order(item) -> tuple[bool, int]:
    path = item.nodeid.split("::", 1)[0]
    slow = SLOW_FIRST.index(path) if path in SLOW_FIRST else len(SLOW_FIRST)
    return item.get_closest_marker("e2e") is not None, slow


@pytest.hookimpl(optionalhook=True)  # optional: `-p no:xdist` runs have no such hook
def pytest_xdist_make_scheduler(config, log):
    """make test's scheduler: whole modules (--dist loadscope), except that each browser test is a
    unit of its own. The browser modules come last (below), and handed out by module they left one or
    two workers running a tail of Playwright tests while the others idled (CI: ~4 min of the run)."""
    if config.getoption("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class BrowserTestsSpread(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith("tests/e2e/"):
                return nodeid
            return super()._split_scope(nodeid)

    return BrowserTestsSpread(config, log)


def pytest_configure(config):
    """A run that must drive the browser (CI: READROOM_REQUIRE_E2E=1) and has none stops here, in
    the main process, with one line, before any xdist worker starts."""
    from tests.browser import chromium_missing, chromium_required

    missing = chromium_missing()
    if missing and chromium_required() and not hasattr(config, "workerinput"):
        raise pytest.UsageError(f"READROOM_REQUIRE_E2E=1 but {missing}")


def pytest_collection_modifyitems(config, items):
    # Playwright's sync API keeps an event loop running for the rest of the session once it starts,
    # which pytest-asyncio's tests cannot share: run the browser tests last. Under xdist this holds
    # per worker because make test schedules whole modules in collection order (--dist loadscope
    # --no-loadscope-reorder): a worker is handed browser tests only once every other test is out.
    items.sort(key=_run_order)


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
        **VERIFIED,
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
        **VERIFIED,
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


# --- xdist: one migrated template database per run (tests/xdist_db.py, docs/testing.md) ------------


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, django_db_blocker):
    """Under xdist on PostgreSQL each worker's test database is made as a copy of the run's template."""
    from django.conf import settings
    from django.db import connection

    from tests.xdist_db import template_ready

    if not os.environ.get("PYTEST_XDIST_WORKER") or connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock():
        template = template_ready(connection)
    settings.DATABASES["default"]["TEST"]["TEMPLATE"] = template
    connection.settings_dict["TEST"]["TEMPLATE"] = template


def pytest_sessionfinish(session, exitstatus):
    from django.db import connection

    from tests.xdist_db import template_drop

    controller_of_workers = not hasattr(session.config, "workerinput") and getattr(
        session.config.option, "numprocesses", None
    )
    if controller_of_workers and connection.vendor == "postgresql":
        template_drop(connection.settings_dict)
