"""The worklist's one-query form of the rules, ``readable_studies_q``, selects exactly the studies
``assess`` accepts — over a matrix of facilities × subspecialties × modalities, readers with
different licences, privileges, scopes and shifts, and instants either side of a local midnight."""

from __future__ import annotations

from datetime import date, timedelta
from itertools import product

import pytest

from credentialing.eligibility import assess, eligible_readers, readable_studies_q
from credentialing.models import PrivilegeStatus
from imaging.models import Study
from tests.conftest import make_radiologist
from tests.credentialing.conftest import chicago_time
from tests.credentialing.factories import LicenceFactory, PrivilegeFactory, ShiftFactory, StudyFactory

pytestmark = pytest.mark.django_db

INSTANTS = [
    chicago_time(2026, 12, 15, 12, 0),
    chicago_time(2026, 12, 31, 23, 59),  # last minute of the IL licence and the Lakeview grant
    chicago_time(2027, 1, 1, 0, 0),  # first minute without them
]
SUBSPECIALTIES = ["neuro", "msk", "general", None, "chest"]
MODALITIES = ["CT", "MR\\SR", "PT\\CT"]


@pytest.fixture
def world(chicago, prairie, lakeview, sub):
    prairie.accepts_general_readers = False
    prairie.save()
    studies = [
        StudyFactory(facility=f, subspecialty=sub(s) if s else None, modalities=m)
        for f, s, m in product([chicago, prairie, lakeview], SUBSPECIALTIES, MODALITIES)
    ]
    on_duty = (chicago_time(2026, 12, 15, 7, 0), chicago_time(2027, 1, 1, 7, 0))

    # a neuroradiologist: IL licence ending 2026-12-31; all of Lakeshore; CT only at Prairie
    neuro = make_radiologist("neuro_reader", "neuro")
    LicenceFactory(profile=neuro.radiologist_profile, state="IL", expires_on=date(2026, 12, 31))
    PrivilegeFactory(profile=neuro.radiologist_profile, facility=chicago)
    PrivilegeFactory(profile=neuro.radiologist_profile, facility=prairie, scope_modalities=["CT"])
    ShiftFactory(radiologist=neuro, starts_at=on_duty[0], ends_at=on_duty[1])

    # a general + MSK reader, IL and WI: Lakeshore for MSK/general only, Lakeview by proxy, Prairie
    # still in review; on shift for Lakeshore and Lakeview only
    general = make_radiologist("general_reader", "general", "msk")
    LicenceFactory(profile=general.radiologist_profile, state="IL", expires_on=date(2028, 6, 30))
    LicenceFactory(profile=general.radiologist_profile, state="WI", expires_on=date(2028, 6, 30))
    PrivilegeFactory(
        profile=general.radiologist_profile, facility=chicago, scope=[sub("msk"), sub("general")]
    )
    PrivilegeFactory(
        profile=general.radiologist_profile,
        facility=lakeview,
        status=PrivilegeStatus.APPROVED_BY_PROXY,
        distant_site_name="Lakeshore Medical Center",
        distant_site_approved_on=date(2024, 11, 1),
    )
    PrivilegeFactory(
        profile=general.radiologist_profile,
        facility=prairie,
        status=PrivilegeStatus.IN_REVIEW,
        granted_on=None,
        expires_on=None,
    )
    ShiftFactory(
        radiologist=general, starts_at=on_duty[0], ends_at=on_duty[1], facilities=[chicago, lakeview]
    )

    # an MSK reader licensed in WI only, privileged at Lakeview until 2026-12-31 and at Prairie
    # (no IL licence), on an MSK-only shift
    msk = make_radiologist("msk_reader", "msk")
    LicenceFactory(profile=msk.radiologist_profile, state="WI", expires_on=date(2028, 1, 31))
    PrivilegeFactory(profile=msk.radiologist_profile, facility=lakeview, expires_on=date(2026, 12, 31))
    PrivilegeFactory(profile=msk.radiologist_profile, facility=prairie)
    ShiftFactory(radiologist=msk, starts_at=on_duty[0], ends_at=on_duty[1], subspecialties=[sub("msk")])

    # fully credentialed but never on shift
    idle = make_radiologist("idle_reader", "neuro", "general")
    LicenceFactory(profile=idle.radiologist_profile, state="IL", expires_on=date(2028, 1, 31))
    PrivilegeFactory(profile=idle.radiologist_profile, facility=chicago)
    return {"studies": studies, "readers": [neuro, general, msk, idle]}


def test_readable_studies_q_selects_exactly_what_assess_accepts(world):
    selected_anything = False
    for reader, at in product(world["readers"], INSTANTS):
        # given what the rules accept study by study
        expected = {s.pk for s in world["studies"] if assess(reader, s, at).eligible}
        # when the worklist asks the database in one query
        got = set(Study.objects.filter(readable_studies_q(reader, at)).values_list("pk", flat=True))
        # then it is the same set
        assert got == expected, (reader.username, at)
        selected_anything |= bool(got)
    # and the matrix is not trivially empty (the comparison means something)
    assert selected_anything


def test_the_matrix_exercises_each_rule(world):
    # a sanity check on the fixture: the reasons seen across the matrix cover every rule
    codes = {
        r.code
        for reader, at in product(world["readers"], INSTANTS)
        for study in world["studies"][::4]
        for r in assess(reader, study, at).reasons
    }
    assert {"licence", "privileges", "privilege_scope", "subspecialty", "shift"} <= {str(c) for c in codes}


def test_the_worklist_is_one_query(world, django_assert_num_queries):
    neuro = world["readers"][0]
    q = readable_studies_q(neuro, INSTANTS[0])
    with django_assert_num_queries(1):
        studies = list(Study.objects.filter(q))
    assert studies


def test_eligible_readers_are_those_assess_accepts(world):
    for study, at in product(world["studies"][::3], INSTANTS[1:]):
        expected = {u.pk for u in world["readers"] if assess(u, study, at).eligible}
        assert {u.pk for u in eligible_readers(study, at)} == expected


def test_a_reader_without_credentials_reads_nothing(dr_msk_wi, world):
    at = INSTANTS[0]
    ShiftFactory(radiologist=dr_msk_wi, starts_at=at - timedelta(hours=1), ends_at=at + timedelta(hours=1))
    assert not Study.objects.filter(readable_studies_q(dr_msk_wi, at)).exists()
