"""The coverage forecast names the facility × subspecialty × shift slots that lose every eligible
reader when an expiring credential is not renewed — and only those."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine

from credentialing.forecast import coverage_forecast
from tests.conftest import make_radiologist
from tests.credentialing.conftest import chicago_time
from tests.credentialing.factories import LicenceFactory, PrivilegeFactory, ShiftFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
WEEKEND_NIGHTS = [(2026, 12, 5), (2027, 1, 9), (2027, 1, 16), (2027, 1, 23)]  # Saturdays, 19:00–07:00


def wisconsin_reader(username: str, name: str, subspecialty: str, lakeview, licence_expires: date):
    reader = make_radiologist(username, subspecialty)
    reader.display_name = name
    reader.save()
    LicenceFactory(
        profile=reader.radiologist_profile, state="WI", number=f"WI-{username}", expires_on=licence_expires
    )
    PrivilegeFactory(profile=reader.radiologist_profile, facility=lakeview, expires_on=date(2028, 6, 30))
    return reader


def on_weekend_nights(reader, lakeview) -> None:
    for y, m, d in WEEKEND_NIGHTS:
        start = chicago_time(y, m, d, 19, 0)
        ShiftFactory(
            radiologist=reader, starts_at=start, ends_at=start + timedelta(hours=12), facilities=[lakeview]
        )


@pytest.fixture
def weekend_rota(lakeview, chicago):
    # Dr K is Lakeview's only MSK reader on weekend nights; his WI licence ends on 11 January.
    dr_k = wisconsin_reader("dr_k", "Dr K", "msk", lakeview, date(2027, 1, 11))
    # A body radiologist works beside him (so Lakeview always has *a* reader, just not an MSK one).
    dr_b = wisconsin_reader("dr_b", "Dr B", "body", lakeview, date(2029, 1, 31))
    # Another MSK reader covers weekday days only.
    dr_m = wisconsin_reader("dr_m", "Dr M", "msk", lakeview, date(2029, 1, 31))
    on_weekend_nights(dr_k, lakeview)
    on_weekend_nights(dr_b, lakeview)
    for day in range(7, 12):  # Mon 7 – Fri 11 December, 08:00–16:00
        start = chicago_time(2026, 12, day, 8, 0)
        ShiftFactory(radiologist=dr_m, starts_at=start, ends_at=start + timedelta(hours=8))
    return dr_k


def test_the_forecast_names_the_gap(weekend_rota):
    # given Dr K's licence expiring in the window and no other MSK reader on weekend nights
    # when the MSO looks 90 days ahead
    gaps = coverage_forecast(NOW)
    # then exactly one gap is named: MSK at Lakeview, weekend nights, from the first shift after the lapse
    assert [g.sentence for g in gaps] == [
        "Dr K's WI licence lapses on 12 Jan 2027: "
        "Lakeview Outpatient Imaging has no MSK reader on weekend nights from then"
    ]
    gap = gaps[0]
    assert gap.starts_at == chicago_time(2027, 1, 16, 19, 0)
    assert [s.code for s in gap.subspecialties] == ["msk"]


def test_no_gap_when_someone_else_covers(weekend_rota, lakeview):
    # given a second MSK reader on the same weekend nights
    cover = wisconsin_reader("dr_c", "Dr C", "msk", lakeview, date(2029, 1, 31))
    on_weekend_nights(cover, lakeview)
    assert coverage_forecast(NOW) == []


def test_no_gap_once_renewed(weekend_rota):
    licence = weekend_rota.radiologist_profile.licences.get()
    licence.expires_on = date(2029, 1, 11)
    licence.save()
    assert coverage_forecast(NOW) == []


def test_forecast_page_shows_the_sentence(client, mso_mary, weekend_rota):
    with time_machine.travel(NOW, tick=False):
        client.force_login(mso_mary)
        page = client.get("/credentialing/forecast/")
    assert page.status_code == 200
    assert b"Lakeview Outpatient Imaging has no MSK reader on weekend nights from then" in page.content
    # the first uncovered shift in Lakeview's own time (issue 19: the forecast was in UTC)
    html = page.content.decode()
    assert "first uncovered <time" in html and ">2027-01-16 19:00 CST</time>" in html
