"""One way to write a time (issue 19, facilities.times): the facility's zone with its abbreviation on
pages and audit rows, ISO 8601 with the offset in CSVs; due times dated when not today. A facility in
America/Chicago and one in America/Denver, either side of the DST change of 8 March 2026."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.template import Context, Template

from facilities.models import Facility, FacilityKind
from facilities.times import due_text, iso_text, time_text

BEFORE = datetime(2026, 3, 8, 7, 30, tzinfo=UTC)  # 01:30 CST / 00:30 MST
AFTER = datetime(2026, 3, 8, 9, 30, tzinfo=UTC)  # 04:30 CDT / 03:30 MDT (2:00 → 3:00 in between)
ZONES = {
    "America/Chicago": ("2026-03-08 01:30 CST", "2026-03-08 04:30 CDT", "-06:00", "-05:00"),
    "America/Denver": ("2026-03-08 00:30 MST", "2026-03-08 03:30 MDT", "-07:00", "-06:00"),
}


@pytest.fixture
def denver(db) -> Facility:
    return Facility.objects.create(
        code="DEN-1",
        name="Front Range Hospital",
        state="CO",
        timezone="America/Denver",
        kind=FacilityKind.COMMUNITY,
    )


@pytest.mark.parametrize("zone_name", ZONES)
def test_text_and_csv_iso_across_the_dst_change(zone_name):
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(zone_name)
    before, after, offset_before, offset_after = ZONES[zone_name]
    assert (time_text(BEFORE, zone), time_text(AFTER, zone)) == (before, after)
    assert iso_text(BEFORE, zone).endswith(offset_before) and iso_text(AFTER, zone).endswith(offset_after)
    assert iso_text(AFTER, zone) == AFTER.astimezone(zone).isoformat(timespec="seconds")


@pytest.mark.parametrize("zone_name", ZONES)
def test_a_due_time_carries_the_date_when_it_is_not_today_there(zone_name):
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(zone_name)
    today = due_text(AFTER, zone, at=BEFORE)  # same local day, across the change
    assert today == ZONES[zone_name][1][-9:]  # "04:30 CDT" / "03:30 MDT"
    tomorrow = due_text(datetime(2026, 3, 9, 20, 46, tzinfo=UTC), zone, at=AFTER)
    assert tomorrow.startswith("Mon 9 Mar ") and tomorrow.endswith(("CDT", "MDT"))


def test_the_page_tag_writes_each_facilitys_zone(chicago, denver):
    rendered = Template(
        "{% load facility_time %}"
        "{% facility_time t chi %}|{% facility_time t den %}|{% facility_time t none %}"
    ).render(Context({"t": AFTER, "chi": chicago, "den": denver, "none": None}))
    assert ">2026-03-08 04:30 CDT</time>" in rendered
    assert ">2026-03-08 03:30 MDT</time>" in rendered
    assert ">2026-03-08 09:30 UTC</time>" in rendered  # a row with no facility: UTC, said so


def test_audit_rows_are_in_their_facilitys_zone_and_filter_by_facility(client, ops_omar, chicago, denver):
    kind = ContentType.objects.get_for_model(Facility)
    for facility, at in ((chicago, BEFORE), (denver, AFTER)):
        LogEntry.objects.create(
            content_type=kind,
            object_pk=str(facility.pk),
            object_repr=facility.name,
            action=LogEntry.Action.UPDATE,
            timestamp=at,
            additional_data={"facility_id": facility.pk},
        )
    client.force_login(ops_omar)
    page = client.get("/audit/").content.decode()
    assert ">2026-03-08 01:30:00 CST</time>" in page and ">2026-03-08 03:30:00 MDT</time>" in page
    only_denver = client.get("/audit/", {"facility": denver.code, "object": "front range"}).content.decode()
    assert "03:30:00 MDT" in only_denver and "CST" not in only_denver
