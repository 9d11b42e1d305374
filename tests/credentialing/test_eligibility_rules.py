"""The eligibility rules of DESIGN.md §6 as a table: each row changes one thing about an otherwise
eligible reader (a neuroradiologist licensed in IL, privileged at Lakeshore, on shift) and says what
``assess`` must answer — including the midnight rule in the facility's time zone."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import pytest

from credentialing.eligibility import ReasonCode, assess
from credentialing.models import LicenceStatus, PrivilegeStatus
from facilities.models import Facility, FacilityKind
from tests.conftest import make_radiologist
from tests.credentialing.conftest import chicago_time
from tests.credentialing.factories import LicenceFactory, PrivilegeFactory, ShiftFactory, StudyFactory

pytestmark = pytest.mark.django_db

# One minute before midnight on the licence's expiry date, Chicago time.
AT = chicago_time(2026, 12, 31, 23, 59)


@dataclass(frozen=True)
class Case:
    name: str
    eligible: bool
    codes: frozenset[ReasonCode] = frozenset()
    says: str = ""  # a sentence (part) the reasons must contain
    at: datetime = AT
    licence: dict | None = field(default_factory=dict)  # overrides; None = no licence at all
    privilege: dict | None = field(default_factory=dict)  # overrides; None = no privileges
    scope: tuple[str, ...] = ()
    reader_subs: tuple[str, ...] = ("neuro",)
    study_sub: str | None = "neuro"
    modalities: str = "CT"
    accepts_general_readers: bool = True
    facility_zone: str = "America/Chicago"
    shift: dict | None = field(default_factory=dict)  # overrides of starts/ends/where; None = off duty


CASES = [
    Case("everything in order", True),
    # licences
    Case("licence valid until 23:59 on its expiry date, facility time", True, at=AT),
    Case(
        "licence expired at midnight Chicago (06:00 UTC)",
        False,
        {ReasonCode.LICENCE},
        "no active licence in IL: licence 036-777 expired on 2026-12-31",
        at=datetime(2027, 1, 1, 6, 0, tzinfo=UTC),
    ),
    Case(
        "still valid at 06:00 UTC in a Los Angeles facility (22:00 on 31 Dec there)",
        True,
        at=datetime(2027, 1, 1, 6, 0, tzinfo=UTC),
        facility_zone="America/Los_Angeles",
    ),
    Case(
        "licence expired",
        False,
        {ReasonCode.LICENCE},
        "expired on 2026-06-30",
        licence={"expires_on": date(2026, 6, 30)},
    ),
    Case(
        "licence pending with the board",
        False,
        {ReasonCode.LICENCE},
        "licence 036-777 is pending with the board",
        licence={"status": LicenceStatus.PENDING},
    ),
    Case(
        "licence suspended",
        False,
        {ReasonCode.LICENCE},
        "is suspended",
        licence={"status": LicenceStatus.SUSPENDED},
    ),
    Case(
        "licence not yet issued",
        False,
        {ReasonCode.LICENCE},
        "is valid from 2027-01-05",
        licence={"issued_on": date(2027, 1, 5), "expires_on": date(2029, 1, 5)},
    ),
    Case(
        "licence in another state only",
        False,
        {ReasonCode.LICENCE},
        "no active licence in IL",
        licence={"state": "WI"},
    ),
    Case("no licence at all", False, {ReasonCode.LICENCE}, "no active licence in IL", licence=None),
    # privileges
    Case(
        "approved by proxy counts",
        True,
        privilege={
            "status": PrivilegeStatus.APPROVED_BY_PROXY,
            "distant_site_name": "St. Anne's",
            "distant_site_approved_on": date(2024, 12, 1),
        },
    ),
    Case(
        "privileges in review",
        False,
        {ReasonCode.PRIVILEGES},
        "privileges at Lakeshore Medical Center are in review, not yet granted",
        privilege={"status": PrivilegeStatus.IN_REVIEW, "granted_on": None, "expires_on": None},
    ),
    Case(
        "privileges expired",
        False,
        {ReasonCode.PRIVILEGES},
        "privileges at Lakeshore Medical Center expired on 2026-11-01",
        privilege={"expires_on": date(2026, 11, 1)},
    ),
    Case(
        "privileges valid through their expiry day, facility time",
        True,
        privilege={"expires_on": date(2026, 12, 31)},
    ),
    Case(
        "privileges lapsed",
        False,
        {ReasonCode.PRIVILEGES},
        "lapsed",
        privilege={"status": PrivilegeStatus.LAPSED},
    ),
    Case(
        "privileges denied",
        False,
        {ReasonCode.PRIVILEGES},
        "were denied",
        privilege={"status": PrivilegeStatus.DENIED},
    ),
    Case(
        "no privileges",
        False,
        {ReasonCode.PRIVILEGES},
        "no privileges at Lakeshore Medical Center",
        privilege=None,
    ),
    # scope
    Case(
        "scope limited to another subspecialty",
        False,
        {ReasonCode.PRIVILEGE_SCOPE},
        "cover Musculoskeletal only, not Neuroradiology studies",
        scope=("msk",),
        reader_subs=("neuro", "msk"),
    ),
    Case("scope covers the study's subspecialty", True, scope=("neuro",)),
    Case(
        "scope limited to MR, study is CT",
        False,
        {ReasonCode.PRIVILEGE_SCOPE},
        "cover MR only, not CT studies",
        privilege={"scope_modalities": ["MR"]},
    ),
    Case(
        "CT scope covers CT with a structured report",
        True,
        modalities="CT\\SR",
        privilege={"scope_modalities": ["CT"]},
    ),
    Case(
        "CT scope does not cover PET/CT",
        False,
        {ReasonCode.PRIVILEGE_SCOPE},
        "not PT studies",
        modalities="PT\\CT",
        privilege={"scope_modalities": ["CT"]},
    ),
    # subspecialty
    Case(
        "not a neuroradiologist",
        False,
        {ReasonCode.SUBSPECIALTY},
        "not a neuroradiologist",
        reader_subs=("msk",),
    ),
    Case("a study without subspecialty is open to all", True, reader_subs=("msk",), study_sub=None),
    Case("a General / ER study is open to all", True, reader_subs=("msk",), study_sub="general"),
    Case("general reader accepted where the facility allows it", True, reader_subs=("general",)),
    Case(
        "general reader refused where the facility does not",
        False,
        {ReasonCode.SUBSPECIALTY},
        "not a neuroradiologist, and Lakeshore Medical Center does not accept general readers for it",
        reader_subs=("general",),
        accepts_general_readers=False,
    ),
    # shift
    Case("not on shift", False, {ReasonCode.SHIFT}, "not on shift at 23:59 CST", shift=None),
    Case("shift starting exactly now counts", True, shift={"starts": timedelta(0)}),
    Case(
        "shift ending exactly now does not",
        False,
        {ReasonCode.SHIFT},
        "not on shift",
        shift={"ends": timedelta(0)},
    ),
    Case(
        "shift limited to another facility",
        False,
        {ReasonCode.SHIFT},
        "on shift at 23:59 CST only for other work",
        shift={"other_facility": True},
    ),
    Case("shift limited to the study's subspecialty", True, shift={"subs": ("neuro",)}),
    Case(
        "shift limited to another subspecialty",
        False,
        {ReasonCode.SHIFT},
        "only for other work",
        shift={"subs": ("msk",)},
    ),
    # several at once: every reason is given
    Case(
        "expired licence, no privileges, off shift",
        False,
        {ReasonCode.LICENCE, ReasonCode.PRIVILEGES, ReasonCode.SHIFT},
        licence={"expires_on": date(2026, 1, 31)},
        privilege=None,
        shift=None,
    ),
]


def _arrange(case: Case, sub):
    facility = Facility.objects.create(
        code="CHI-L1",
        name="Lakeshore Medical Center",
        state="IL",
        timezone=case.facility_zone,
        kind=FacilityKind.LEVEL1_TRAUMA,
        accepts_general_readers=case.accepts_general_readers,
    )
    reader = make_radiologist("dr_case", *case.reader_subs)
    profile = reader.radiologist_profile
    if case.licence is not None:
        defaults = {"number": "036-777", "issued_on": date(2020, 1, 1), "expires_on": date(2026, 12, 31)}
        LicenceFactory(profile=profile, **{**defaults, **case.licence})
    if case.privilege is not None:
        defaults = {"expires_on": date(2027, 6, 30)}
        PrivilegeFactory(
            profile=profile,
            facility=facility,
            scope=[sub(code) for code in case.scope],
            **{**defaults, **case.privilege},
        )
    if case.shift is not None:
        shift = dict(case.shift)
        other = Facility.objects.create(
            code="OTHER", name="Elsewhere", state="IL", kind=FacilityKind.COMMUNITY
        )
        ShiftFactory(
            radiologist=reader,
            starts_at=case.at - shift.get("starts", timedelta(hours=4)),
            ends_at=case.at + shift.get("ends", timedelta(hours=8)),
            facilities=[other] if shift.get("other_facility") else [],
            subspecialties=[sub(code) for code in shift.get("subs", ())],
        )
    study = StudyFactory(
        facility=facility,
        subspecialty=sub(case.study_sub) if case.study_sub else None,
        modalities=case.modalities,
    )
    return reader, study


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_eligibility_rule(case: Case, sub):
    # given one reader whose records differ from an eligible one in exactly what the case says
    reader, study = _arrange(case, sub)
    # when we ask
    assessment = assess(reader, study, case.at)
    # then the answer and the reasons are the case's
    assert assessment.eligible is case.eligible, assessment.messages
    assert {r.code for r in assessment.reasons} == set(case.codes), assessment.messages
    if case.says:
        assert any(case.says in m for m in assessment.messages), assessment.messages


def test_someone_without_a_reading_profile_is_not_a_radiologist(mso_mary, chicago, sub):
    # given credentialing staff, who read nothing
    study = StudyFactory(facility=chicago, subspecialty=sub("neuro"))
    # when asked about
    assessment = assess(mso_mary, study, AT)
    # then they are refused as not a radiologist
    assert not assessment.eligible
    assert [r.code for r in assessment.reasons] == [ReasonCode.NOT_A_RADIOLOGIST]


def test_a_lapse_takes_effect_on_the_next_question(neuro_il_credentials, dr_neuro_il, chicago, sub):
    # given an eligible reader on shift
    at = chicago_time(2026, 12, 1, 10, 0)
    ShiftFactory(radiologist=dr_neuro_il, starts_at=at - timedelta(hours=1), ends_at=at + timedelta(hours=8))
    study = StudyFactory(facility=chicago, subspecialty=sub("neuro"))
    assert assess(dr_neuro_il, study, at).eligible
    # when credentialing staff lapse the privileges
    from credentialing.services import privilege_lapse

    privilege_lapse(
        actor=None, privilege=neuro_il_credentials["privilege"], note="Resigned from the medical staff"
    )
    # then the very next assessment refuses, with the reason (nothing cached)
    assessment = assess(dr_neuro_il, study, at)
    assert not assessment.eligible
    assert assessment.messages == ["privileges at Lakeshore Medical Center lapsed"]


def test_assessment_needs_an_aware_time(neuro_il_credentials, dr_neuro_il, chicago):
    study = StudyFactory(facility=chicago)
    with pytest.raises(ValueError, match="aware"):
        assess(dr_neuro_il, study, datetime(2026, 12, 1, 10, 0))
