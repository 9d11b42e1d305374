"""The verification rule (issue 19): where a facility requires it (``reads_before_verification`` off,
the default), a reader is eligible only once the licence in force in its state and a malpractice
cover in force are verified with the primary source — and the engine says which is missing."""

from __future__ import annotations

from datetime import date

import pytest

from credentialing.eligibility import ReasonCode, assess, eligible_readers, readable_studies_q
from credentialing.models import MalpracticeCoverage
from imaging.models import Study
from tests.conftest import make_radiologist
from tests.credentialing.conftest import chicago_time
from tests.credentialing.factories import LicenceFactory, PrivilegeFactory, ShiftFactory, StudyFactory

pytestmark = pytest.mark.django_db

AT = chicago_time(2026, 12, 10, 9, 0)


@pytest.fixture
def setup(chicago, sub):
    """A neuroradiologist licensed in IL, privileged at Lakeshore and on shift: eligible but for
    what each test takes away."""
    reader = make_radiologist("dr_verify", "neuro")
    licence = LicenceFactory(profile=reader.radiologist_profile, state="IL", number="036-777777")
    PrivilegeFactory(profile=reader.radiologist_profile, facility=chicago)
    ShiftFactory(
        radiologist=reader, starts_at=chicago_time(2026, 12, 10, 7), ends_at=chicago_time(2026, 12, 10, 19)
    )
    study = StudyFactory(facility=chicago, subspecialty=sub("neuro"), modalities="CT")
    cover = MalpracticeCoverage.objects.get(profile=reader.radiologist_profile)
    return reader, licence, cover, study


def verification_reason(reader, study) -> str:
    assessment = assess(reader, study, AT)
    assert not assessment.eligible
    assert [r.code for r in assessment.reasons] == [ReasonCode.VERIFICATION]
    return assessment.reasons[0].message


def readable(reader) -> bool:
    return Study.objects.filter(readable_studies_q(reader, AT)).exists()


def test_a_verified_reader_with_cover_is_eligible(setup):
    reader, _, _, study = setup
    assert assess(reader, study, AT).eligible
    assert eligible_readers(study, AT) == [reader] and readable(reader)


def test_an_unverified_licence_is_refused_where_verification_is_required_and_says_why(setup):
    reader, licence, _, study = setup
    licence.verified_at, licence.verification_method = None, ""
    licence.save()
    message = verification_reason(reader, study)
    assert (
        message
        == "Lakeshore Medical Center requires verified credentials: IL licence 036-777777 not verified"
    )
    # the worklist query and routing agree with assess
    assert eligible_readers(study, AT) == [] and not readable(reader)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("delete", "no malpractice cover"),
        ("lapse", "malpractice cover lapsed on 2026-11-30"),
        ("unverify", "malpractice cover (Medical Protective) not verified"),
    ],
)
def test_malpractice_cover_missing_lapsed_or_unverified_is_refused(setup, change, says):
    reader, _, cover, study = setup
    if change == "delete":
        cover.delete()
    elif change == "lapse":
        cover.effective_on, cover.expires_on = date(2025, 12, 1), date(2026, 11, 30)
        cover.save()
    else:
        cover.verified_at, cover.verification_method = None, ""
        cover.save()
    assert says in verification_reason(reader, study)
    assert not readable(reader)


def test_a_facility_that_lets_readers_read_before_verification_keeps_them_eligible(setup, chicago):
    reader, licence, cover, study = setup
    licence.verified_at, licence.verification_method = None, ""
    licence.save()
    cover.delete()
    chicago.reads_before_verification = True
    chicago.save()
    assert assess(reader, study, AT).eligible
    assert eligible_readers(study, AT) == [reader] and readable(reader)


def test_the_mso_sets_the_policy_on_the_facility_settings_page(client, mso_mary, admin_chicago, chicago):
    client.force_login(mso_mary)
    page = client.get("/credentialing/facilities/CHI-L1/").content.decode()
    assert 'name="reads_before_verification"' in page and "Readers eligible before verification" in page
    form = {"reappointment_months": "24", "requirements": "NPDB query", "reads_before_verification": "on"}
    assert client.post("/credentialing/facilities/CHI-L1/", form).status_code == 302
    chicago.refresh_from_db()
    assert chicago.reads_before_verification is True
    del form["reads_before_verification"]
    client.post("/credentialing/facilities/CHI-L1/", form)
    chicago.refresh_from_db()
    assert chicago.reads_before_verification is False
    # a facility admin may not change it
    client.force_login(admin_chicago)
    refused = client.post("/credentialing/facilities/CHI-L1/", {**form, "reads_before_verification": "on"})
    assert refused.status_code == 403
    chicago.refresh_from_db()
    assert chicago.reads_before_verification is False


def test_the_operations_desk_counts_unverified_readers(setup):
    from credentialing.eligibility import assess_readers
    from worklist.selectors import _coverage

    reader, licence, _, study = setup
    licence.verified_at, licence.verification_method = None, ""
    licence.save()

    coverage = _coverage(assess_readers(study, AT, [reader]), "IL")
    assert coverage.eligible == 0 and coverage.gaps == ["1 credentials unverified"]
