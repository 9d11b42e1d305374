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
from imaging import storage
from interfaces.models import OutboundMessage
from qa.models import PeerReview, QuarterlyReport, ReviewStatus
from radiology.demo import DEMO_PASSWORD, PEOPLE, demo_load
from reports.models import Charge, Report, ReportStatus, ReportTemplate
from tests.conftest import current_totp
from worklist.coverage import coverage_grid, on_shift_now
from worklist.models import AiTriageRule, Shift, ShiftTemplate

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def image_store(settings, tmp_path):
    """The demo's earlier studies store their images: in this test's own directory."""
    settings.READROOM_STORAGE_DIR = tmp_path / "storage"
    settings.READROOM_STORAGE_FSYNC = False
    storage._keys.cache_clear()
    yield
    storage._keys.cache_clear()


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
        "reports": Report.objects.count(),
        "charges": Charge.objects.count(),
        "oru": OutboundMessage.objects.count(),
        "reviews": PeerReview.objects.count(),
        "templates": ReportTemplate.objects.count(),
        "quarterly": QuarterlyReport.objects.count(),
        "ai_rules": AiTriageRule.objects.count(),
    }


def test_loading_twice_duplicates_nothing(capsys):
    call_command("load_demo")
    first = _counts()
    call_command("load_demo")
    assert _counts() == first
    assert "0 new facilities, 0 new users" in capsys.readouterr().out


@pytest.fixture(scope="class")
def demo_loaded(django_db_setup, django_db_blocker, tmp_path_factory):
    """One demo load for the class's tests (it took ~10-25 s; loaded per test, this module was ~5 min).
    It stays in an outer transaction: each test runs in its own savepoint inside it and is rolled
    back as usual, so every test reads the demo exactly as loaded; at the end the outer transaction is
    rolled back, and what runs next on this process starts from the empty database as before."""
    from django.db import transaction
    from django.test.utils import override_settings

    storage_dir = tmp_path_factory.mktemp("demo-storage")
    with (
        override_settings(READROOM_STORAGE_DIR=storage_dir, READROOM_STORAGE_FSYNC=False),
        django_db_blocker.unblock(),
        transaction.atomic(),
    ):
        storage._keys.cache_clear()
        demo_load()
        yield
        transaction.set_rollback(True)
    storage._keys.cache_clear()


@pytest.mark.usefixtures("demo_loaded")
class TestTheLoadedDemo:
    """What a fresh demo shows; none of these changes the demo (what they write is rolled back)."""

    def test_the_demo_cast(self):
        facilities = {f.code: f for f in Facility.objects.all()}
        assert len({f.state for f in facilities.values()}) >= 2
        assert facilities["CHI-L1"].kind == FacilityKind.LEVEL1_TRAUMA
        assert facilities["IL-PRAIRIE"].kind == FacilityKind.CRITICAL_ACCESS
        assert (facilities["WI-LAKEVIEW"].state, facilities["WI-LAKEVIEW"].kind) == (
            "WI",
            FacilityKind.OUTPATIENT_IMAGING,
        )
        radiologists = RadiologistProfile.objects.prefetch_related("subspecialties")
        assert radiologists.count() == 9
        covered = {s.code for p in radiologists for s in p.subspecialties.all()}
        assert {"neuro", "msk", "body", "chest", "pediatric", "breast", "general"} <= covered
        roles = {role for u in User.objects.all() for role in roles_of(u)}
        assert roles == set(Role)

    def test_the_locum_awaiting_verification_is_flagged_notified_and_not_eligible(self, client):
        """Issue 19: a fresh demo shows the MSO's flags — one reader, dr.locum, with an unverified IL
        licence and a lapsed malpractice cover, approved at Lakeshore and on its rota."""
        from credentialing.eligibility import ReasonCode, assess
        from credentialing.models import Notification
        from credentialing.selectors import credential_flags
        from imaging.models import Study

        locum = User.objects.get(username="dr.locum")
        now = timezone.now()
        # the flags: only the locum, with both problems, barred at Lakeshore
        flags = credential_flags(now)
        assert set(flags) == {locum.pk}
        flag = flags[locum.pk]
        assert flag.problems[0] == "IL licence 036-204518 not verified"
        assert flag.problems[1].startswith("malpractice cover lapsed on ")
        assert flag.barred_names == ("Lakeshore Medical Center",)
        # the MSO was told on load: the flag (once) and the lapsed cover (the expiry rules' overdue)
        notices = Notification.objects.filter(recipient__username="mso")
        flag_notice = notices.get(key__startswith=f"verification:{locum.pk}:")
        assert flag_notice.message.startswith(
            "Jonah Reiter, MD is not eligible at Lakeshore Medical Center until verified: "
            "IL licence 036-204518 not verified; malpractice cover lapsed on "
        )
        assert notices.filter(key__endswith=":overdue", message__contains="Jonah Reiter, MD's malpractice")
        # the engine refuses the locum at Lakeshore during their shift, for verification only there
        shift = Shift.objects.filter(radiologist=locum, starts_at__gt=now).order_by("starts_at").first()
        study = Study.objects.filter(facility__code="CHI-L1").first()
        reasons = assess(locum, study, shift.starts_at + timedelta(hours=1)).reasons
        verification = [r for r in reasons if r.code == ReasonCode.VERIFICATION]
        assert verification and verification[0].message.startswith(
            "Lakeshore Medical Center requires verified credentials: IL licence 036-204518 not verified"
        )
        assert ReasonCode.SHIFT not in {r.code for r in reasons}  # on the rota: that is not the reason
        # and the MSO's matrix and forecast show it
        client.force_login(User.objects.get(username="mso"))
        matrix = client.get("/credentialing/").content.decode()
        assert "⚑ IL licence 036-204518 not verified" in matrix
        assert matrix.count('data-testid="credential-flag"') == 1 and "not eligible until verified" in matrix
        forecast = client.get("/credentialing/forecast/").content.decode()
        assert "Jonah Reiter, MD" in forecast
        assert "not eligible at Lakeshore Medical Center until verified" in forecast

    def test_the_demo_rota_has_readers_on_shift_at_every_hour_and_one_deliberate_gap(self):
        # given the demo loaded
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
    def test_every_printed_login_works(self, client, person):
        response = client.post("/login/", {"username": person.username, "password": DEMO_PASSWORD})
        assert response.status_code == 302, f"{person.username} could not sign in"
        user = User.objects.get(username=person.username)
        if person.role in (Role.RADIOLOGIST, Role.MEDICAL_DIRECTOR):
            device = TOTPDevice.objects.get(user=user)
            assert client.post("/account/verify/", {"token": current_totp(device)}).status_code == 302
        home = client.get("/")
        assert home.status_code == 200
        assert person.role.value.encode() in home.content

    def test_totp_code_command_matches_the_device(self, capsys):
        call_command("totp_code", "dr.neuro")
        printed = capsys.readouterr().out.strip()
        assert printed == current_totp(TOTPDevice.objects.get(user__username="dr.neuro"))

    def test_every_reading_page_has_something_to_show(self, settings):
        # when the demo is loaded
        facilities = {f.code: f for f in Facility.objects.all()}
        # then each facility reports to the EMR simulator, has a rate, and one takes wet reads
        assert {(f.hl7_outbound_host, f.hl7_outbound_port) for f in facilities.values()} == {
            ("127.0.0.1", settings.READROOM_EMR_SIM_PORT)
        }
        assert all(f.read_rate > 0 for f in facilities.values())
        assert [code for code, f in facilities.items() if f.accepts_preliminary] == ["CHI-L1"]
        # earlier reads were signed through the services: final, charged, an ORU queued for each
        finals = Report.objects.filter(status=ReportStatus.FINAL, study__accession_number__startswith="DEMO-")
        assert finals.count() == 6
        assert Charge.objects.filter(report__in=finals).count() == 6
        assert (
            OutboundMessage.objects.filter(source__in=[f"report:{r.pk}:final" for r in finals]).count() == 6
        )
        # peer review in each state, the discrepancy adjudicated with feedback; a quarterly report
        states = set(PeerReview.objects.values_list("status", flat=True))
        assert {
            ReviewStatus.ASSIGNED,
            ReviewStatus.SCORED,
            ReviewStatus.ADJUDICATION,
            ReviewStatus.CLOSED,
        } <= states
        closed = PeerReview.objects.get(
            status=ReviewStatus.CLOSED, report__study__accession_number="DEMO-R01"
        )
        assert closed.adjudication.feedback
        assert QuarterlyReport.objects.filter(facility__code="CHI-L1").count() == 1
        # and the simulator's procedures without a shipped template have the facility's own
        assert ReportTemplate.objects.filter(facility=facilities["IL-PRAIRIE"]).count() == 4

    def test_this_months_charges_csv_has_rows_on_a_fresh_demo(self, client):
        # Issue 19: the recent earlier reads are signed in the current (facility-local) month, unless
        # the month is less than the time a read takes old (radiology/demo_reading.py _read_time).
        from radiology.demo_reading import DEMO_ZONE, READ_TAKES

        now = timezone.now().astimezone(DEMO_ZONE)
        if now - now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) < READ_TAKES:
            pytest.skip("the month began minutes ago: the demo leaves its reads in the last one")
        client.force_login(User.objects.get(username="ops"))
        for code, reads in (("CHI-L1", 3), ("WI-LAKEVIEW", 1)):
            response = client.get(f"/reports/charges/{code}/{now:%Y-%m}.csv")
            assert response.status_code == 200
            rows = response.content.decode().strip().splitlines()[1:]
            assert len(rows) == reads, (code, rows)
            assert all(",DEMO-R0" in row for row in rows)

    def test_the_demo_makes_one_patient_per_person(self):
        """Issue #13: the images' empty Issuer of Patient ID and the order's PID-3.4 (the hospital's
        MSH-4) are one identity domain, so no exam leaves an orphaned second patient."""
        from imaging.models import Patient

        live = Patient.objects.filter(merged_into=None)
        assert live.exists()
        assert live.count() == live.values("facility", "mrn").distinct().count()
        orphans = live.filter(orders=None, studies=None)
        assert not orphans.exists(), [str(p) for p in orphans]

    def test_the_demo_facilities_have_the_ai_triage_rules_the_simulators_ai_node_exercises(self):
        for facility in Facility.objects.all():
            rules = dict(AiTriageRule.objects.filter(facility=facility).values_list("name", "raise_to"))
            assert rules == {
                "ICH positive → STAT, first": "STAT",
                "LVO positive on a CTA → STROKE": "STROKE",
                "PE positive → first within its class": "",
            }


@pytest.mark.django_db(transaction=True)
def test_load_demo_refuses_the_production_settings_and_creates_nothing(tmp_path):
    # Issue 15 §9: the demo's passwords and TOTP keys are published; under production settings
    # (a real process, pointed at this test's database) the command exits non-zero with the reason.
    import base64
    import os
    import subprocess
    import sys
    from pathlib import Path

    from django.db import connection

    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="radiology.settings.production",
        READROOM_DATA_DIR=str(tmp_path),
        SECRET_KEY="s" * 50,
        READROOM_STORAGE_KEY=base64.b64encode(b"k" * 32).decode(),
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        REDIS_URL=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
    )
    if connection.vendor != "postgresql":
        pytest.skip("the production settings need PostgreSQL")
    before = _counts()
    done = subprocess.run(
        [sys.executable, "manage.py", "load_demo"],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "refuses to run with the production settings" in done.stderr
    assert "published" in done.stderr and "Traceback" not in done.stderr
    assert _counts() == before
    assert not User.objects.filter(username="dr.neuro").exists()


def test_recent_demo_reads_move_into_this_month_but_never_into_the_future():
    from datetime import datetime

    from radiology.demo_reading import DEMO_ZONE, EARLIER_READS, _read_time

    r03 = next(r for r in EARLIER_READS if r.accession == "DEMO-R03")  # 6 days ago at 11:00
    mid_month = datetime(2026, 12, 20, 15, tzinfo=DEMO_ZONE)
    assert _read_time(r03, mid_month.date(), mid_month) == datetime(2026, 12, 14, 11, tzinfo=DEMO_ZONE)
    third = datetime(2026, 12, 3, 15, tzinfo=DEMO_ZONE)
    assert _read_time(r03, third.date(), third) == datetime(2026, 12, 1, 11, tzinfo=DEMO_ZONE)
    early_first = datetime(2026, 12, 1, 6, tzinfo=DEMO_ZONE)  # before 11:00: earlier this morning
    assert _read_time(r03, early_first.date(), early_first) == datetime(2026, 12, 1, 5, 40, tzinfo=DEMO_ZONE)
    just_begun = datetime(2026, 12, 1, 0, 5, tzinfo=DEMO_ZONE)  # no room: left in November
    assert _read_time(r03, just_begun.date(), just_begun) == datetime(2026, 11, 25, 11, tzinfo=DEMO_ZONE)
