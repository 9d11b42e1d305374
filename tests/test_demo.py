"""`make demo`'s data: the right cast, loaded idempotently, and every printed login works."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice
from guardian.models import UserObjectPermission

from accounts.models import User
from accounts.roles import Role, roles_of
from credentialing.models import RadiologistProfile
from facilities.models import Facility, FacilityKind
from radiology.demo import DEMO_PASSWORD, PEOPLE, demo_load
from tests.conftest import current_totp
from worklist.coverage import coverage_grid, on_shift_now
from worklist.models import Shift, ShiftTemplate

pytestmark = pytest.mark.django_db


def _counts() -> dict[str, int]:
    return {
        "facilities": Facility.objects.count(),
        "users": User.objects.count(),
        "profiles": RadiologistProfile.objects.count(),
        "devices": TOTPDevice.objects.count(),
        "object_perms": UserObjectPermission.objects.count(),
        "memberships": User.groups.through.objects.count(),
        "shift_templates": ShiftTemplate.objects.count(),
        "shifts": Shift.objects.count(),
    }


def test_loading_twice_duplicates_nothing(capsys):
    call_command("load_demo")
    first = _counts()
    call_command("load_demo")
    assert _counts() == first
    assert "0 new facilities, 0 new users" in capsys.readouterr().out


def test_the_demo_cast():
    demo_load()
    facilities = {f.code: f for f in Facility.objects.all()}
    assert len({f.state for f in facilities.values()}) >= 2
    assert facilities["CHI-L1"].kind == FacilityKind.LEVEL1_TRAUMA
    assert facilities["IL-PRAIRIE"].kind == FacilityKind.CRITICAL_ACCESS
    assert (facilities["WI-LAKEVIEW"].state, facilities["WI-LAKEVIEW"].kind) == (
        "WI",
        FacilityKind.OUTPATIENT_IMAGING,
    )
    radiologists = RadiologistProfile.objects.prefetch_related("subspecialties")
    assert radiologists.count() == 8
    covered = {s.code for p in radiologists for s in p.subspecialties.all()}
    assert {"neuro", "msk", "body", "chest", "pediatric", "breast", "general"} <= covered
    roles = {role for u in User.objects.all() for role in roles_of(u)}
    assert roles == set(Role)


def test_the_demo_rota_has_readers_on_shift_at_every_hour_and_one_deliberate_gap():
    # given the demo loaded
    demo_load()
    now = timezone.now()
    # then somebody is on shift at every hour of the coming week …
    assert all(on_shift_now(now + timedelta(hours=h)) for h in range(0, 7 * 24))
    # … and the grid's only red is Lakeview (WI) on Sunday night, 19:00 to 07:00 Monday
    grid = coverage_grid(at=now)
    gaps = {
        (row.facility.code, cell.day.weekday(), label)
        for row in grid.rows
        for cell in row.cells
        for label in cell.gap_labels
    }
    assert {code for code, _, _ in gaps} == {"WI-LAKEVIEW"}
    for _, day, label in gaps:  # a gap under way counts from now
        start, end = label.split("–")
        assert (day == 6 and start >= "19:00" and end == "24:00") or (day == 0 and end == "07:00"), label


@pytest.mark.parametrize("person", PEOPLE, ids=lambda p: p.username)
def test_every_printed_login_works(client, person):
    demo_load()
    response = client.post("/login/", {"username": person.username, "password": DEMO_PASSWORD})
    assert response.status_code == 302, f"{person.username} could not sign in"
    user = User.objects.get(username=person.username)
    if person.role in (Role.RADIOLOGIST, Role.MEDICAL_DIRECTOR):
        device = TOTPDevice.objects.get(user=user)
        assert client.post("/account/verify/", {"token": current_totp(device)}).status_code == 302
    home = client.get("/")
    assert home.status_code == 200
    assert person.role.value.encode() in home.content


def test_totp_code_command_matches_the_device(capsys):
    demo_load()
    call_command("totp_code", "dr.neuro")
    printed = capsys.readouterr().out.strip()
    assert printed == current_totp(TOTPDevice.objects.get(user__username="dr.neuro"))
