"""``reader_facts`` loads every reader's records in one query (JSON aggregation), however many
readers and records — and the facts are the records, whole and in the order the reasons are told
in. The worklist asks it on every request and never caches it (docs/worklist-fanout.md)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from credentialing.eligibility import (
    CoverFact,
    FacilityFacts,
    LicenceFact,
    PrivilegeFact,
    ShiftFact,
    reader_facts,
)
from credentialing.models import LicenceStatus, PrivilegeStatus
from tests.conftest import make_radiologist, make_user
from tests.credentialing.conftest import chicago_time
from tests.credentialing.factories import LicenceFactory, PrivilegeFactory, ShiftFactory

pytestmark = pytest.mark.django_db

AT = chicago_time(2026, 12, 15, 12, 0)


def test_every_readers_records_in_one_query(chicago, prairie, lakeview, sub, django_assert_num_queries):
    # given a general + MSK reader with two licences (one unverified), a proxy grant limited to two
    # subspecialties, a CT/MR-only application still in review, and three shifts: one limited to
    # facilities and subspecialties, one unlimited, one that ended before the instant asked about
    general = make_radiologist("general_reader", "general", "msk")
    profile = general.radiologist_profile
    il = LicenceFactory(profile=profile, state="IL", expires_on=date(2028, 6, 30))
    wi = LicenceFactory(profile=profile, state="WI", unverified=True, status=LicenceStatus.SUSPENDED)
    PrivilegeFactory(
        profile=profile,
        facility=lakeview,
        status=PrivilegeStatus.APPROVED_BY_PROXY,
        distant_site_name="Lakeshore Medical Center",
        distant_site_approved_on=date(2024, 11, 1),
        scope=[sub("msk"), sub("general")],
    )
    PrivilegeFactory(
        profile=profile,
        facility=chicago,
        status=PrivilegeStatus.IN_REVIEW,
        scope_modalities=["CT", "MR"],
        granted_on=None,
        expires_on=None,
    )
    limited = ShiftFactory(
        radiologist=general,
        starts_at=AT - timedelta(hours=2),
        ends_at=AT + timedelta(hours=6),
        facilities=[chicago, lakeview],
        subspecialties=[sub("msk")],
    )
    ShiftFactory(radiologist=general, starts_at=AT - timedelta(hours=1), ends_at=AT + timedelta(hours=1))
    ShiftFactory(radiologist=general, starts_at=AT - timedelta(hours=9), ends_at=AT - timedelta(hours=1))
    # a neuroradiologist with nothing but a profile and no cover
    neuro = make_radiologist("neuro_reader", "neuro", covered=False)
    # an inactive radiologist, and a user with no reading profile: no facts
    gone = make_radiologist("gone_reader", "neuro")
    gone.is_active = False
    gone.save(update_fields=["is_active"])
    clerk = make_user("clerk", None)

    # when their facts are loaded
    with django_assert_num_queries(1):
        facts = reader_facts([general.pk, neuro.pk, gone.pk, clerk.pk, 999_999], shifts_from=AT)

    # then only the two active readers have facts, each record as stored
    assert set(facts) == {general.pk, neuro.pk}
    reader = facts[general.pk]
    assert reader.name == "Dr general_reader"
    assert reader.subspecialty_codes == {"general", "msk"}
    assert reader.subspecialty_ids == {sub("general").pk, sub("msk").pk}
    assert reader.licences == (
        LicenceFact("IL", il.number, LicenceStatus.ACTIVE, date(2020, 1, 1), date(2028, 6, 30), True),
        LicenceFact("WI", wi.number, LicenceStatus.SUSPENDED, date(2020, 1, 1), date(2027, 12, 31), False),
    )
    assert reader.covers == (CoverFact("Medical Protective", date(2020, 1, 1), date(2030, 12, 31), True),)
    # privileges by facility name (Lakeshore before Lakeview), the scope's subspecialties by name
    assert reader.privileges == (
        PrivilegeFact(
            chicago.pk,
            chicago.name,
            PrivilegeStatus.IN_REVIEW,
            None,
            None,
            frozenset(),
            (),
            ("CT", "MR"),
            FacilityFacts(chicago.pk, chicago.name, "IL", ZoneInfo("America/Chicago"), True, False),
        ),
        PrivilegeFact(
            lakeview.pk,
            lakeview.name,
            PrivilegeStatus.APPROVED_BY_PROXY,
            date(2025, 2, 1),
            date(2027, 1, 31),
            frozenset({sub("msk").pk, sub("general").pk}),
            (sub("general").name, sub("msk").name),
            (),
            FacilityFacts(
                lakeview.pk,
                lakeview.name,
                "WI",
                ZoneInfo(lakeview.timezone),
                lakeview.accepts_general_readers,
                False,
            ),
        ),
    )
    # the shifts around the instant, by start, with their limits; the ended one left out
    assert reader.shifts == (
        ShiftFact(
            limited.starts_at,
            limited.ends_at,
            frozenset({chicago.pk, lakeview.pk}),
            frozenset({sub("msk").pk}),
        ),
        ShiftFact(AT - timedelta(hours=1), AT + timedelta(hours=1), frozenset(), frozenset()),
    )
    assert all(s.starts_at.tzinfo is not None for s in reader.shifts)
    bare = facts[neuro.pk]
    assert (bare.subspecialty_codes, bare.licences, bare.privileges, bare.shifts, bare.covers) == (
        {"neuro"},
        (),
        (),
        (),
        (),
    )


def test_a_window_of_shifts_and_nobody_asked(chicago, django_assert_num_queries):
    # given a reader with a shift tomorrow
    reader = make_radiologist("night_reader", "general")
    tomorrow = datetime(2026, 12, 16, 23, 0, tzinfo=UTC)
    ShiftFactory(radiologist=reader, starts_at=tomorrow, ends_at=tomorrow + timedelta(hours=8))
    # then the instant alone does not see it, a window reaching it does
    assert reader_facts([reader.pk], shifts_from=AT)[reader.pk].shifts == ()
    window = reader_facts([reader.pk], shifts_from=AT, shifts_until=tomorrow + timedelta(minutes=1))
    assert [s.starts_at for s in window[reader.pk].shifts] == [tomorrow]
    # and asking about nobody asks the database nothing
    with django_assert_num_queries(0):
        assert reader_facts([], shifts_from=AT) == {}
