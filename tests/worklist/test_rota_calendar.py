"""The rota calendar (issue 19): a week of shifts by reader and each facility's gaps, for operations
and the MSO; one-off shifts created and changed from it by operations only, through htmx."""

from __future__ import annotations

from datetime import time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from accounts.navigation import navigation_for
from credentialing.models import Subspecialty
from worklist.coverage import local_instant, shift_template_create
from worklist.models import Shift
from worklist.rota_calendar import week_monday

pytestmark = pytest.mark.django_db

CHICAGO = ZoneInfo("America/Chicago")
HTMX = {"HTTP_HX_REQUEST": "true"}


def next_monday():
    return week_monday(timezone.now().astimezone(CHICAGO).date()) + timedelta(days=7)


def cell(html: str, row: str, day) -> str:
    return html.split(row)[1].split(f'data-day="{day.isoformat()}"')[1].split("</td>")[0]


def shift_form(reader, day, start="00:00", end="00:00", **extra) -> dict:
    return {
        "radiologist": reader.pk,
        "day": day.isoformat(),
        "start_time": start,
        "end_time": end,
        "timezone": "America/Chicago",
        "note": "Cover",
        **extra,
    }


def test_operations_add_a_day_shift_from_the_calendar_and_the_gap_closes(
    client, ops_omar, dr_neuro_il, neuro_il_credentials, chicago
):
    wednesday = next_monday() + timedelta(days=2)
    week = f"/operations/rota/calendar/?week={wednesday.isoformat()}&facility=CHI-L1"
    client.force_login(ops_omar)
    # given: nobody on shift, so Lakeshore's Wednesday lists a neuro gap and the reader has no row
    before = client.get(week).content.decode()
    assert "Neuroradiology 00:00–24:00" in cell(before, 'data-facility="CHI-L1"', wednesday)
    assert f'data-reader="{dr_neuro_il.username}"' not in before
    # when operations open the form from the calendar and add a whole-day neuro shift (htmx)
    form = client.get(f"/operations/rota/calendar/shifts/new/?day={wednesday}", **HTMX).content.decode()
    assert 'hx-post="/operations/rota/calendar/shifts/new/"' in form and "Day it starts" in form
    neuro = Subspecialty.objects.get(code="neuro")
    response = client.post(
        "/operations/rota/calendar/shifts/new/",
        shift_form(dr_neuro_il, wednesday, facilities=[chicago.pk], subspecialties=[neuro.pk]),
        **HTMX,
    )
    # then the shift is stored in Chicago time, and the calendar comes back in place of the old one
    shift = Shift.objects.get(radiologist=dr_neuro_il)
    assert shift.starts_at == local_instant(wednesday, time(0), CHICAGO)
    assert shift.ends_at == local_instant(wednesday + timedelta(days=1), time(0), CHICAGO)
    assert response["HX-Retarget"] == "#rota-calendar"
    after = response.content.decode()
    assert "00:00–00:00" in cell(after, f'data-reader="{dr_neuro_il.username}"', wednesday)
    assert "Neuroradiology" not in cell(after, 'data-facility="CHI-L1"', wednesday)
    assert "Neuroradiology 00:00–24:00" in cell(
        after, 'data-facility="CHI-L1"', wednesday + timedelta(days=1)
    )


def test_a_night_shift_ends_the_next_morning_and_can_be_changed(client, ops_omar, dr_neuro_il, chicago):
    monday = next_monday()
    client.force_login(ops_omar)
    client.post("/operations/rota/calendar/shifts/new/", shift_form(dr_neuro_il, monday, "23:00", "07:00"))
    shift = Shift.objects.get(radiologist=dr_neuro_il)
    assert shift.ends_at - shift.starts_at == timedelta(hours=8)
    edit = client.get(f"/operations/rota/calendar/shifts/{shift.pk}/", **HTMX).content.decode()
    assert 'value="23:00"' in edit and 'value="07:00"' in edit
    client.post(
        f"/operations/rota/calendar/shifts/{shift.pk}/",
        shift_form(dr_neuro_il, monday, "22:00", "06:00"),
        **HTMX,
    )
    shift.refresh_from_db()
    assert shift.starts_at == local_instant(monday, time(22), CHICAGO)
    page = client.get(f"/operations/rota/calendar/?week={monday}").content.decode()
    assert "22:00–06:00 (+1)" in cell(page, f'data-reader="{dr_neuro_il.username}"', monday)


def test_a_bad_shift_is_refused_with_the_form_and_its_errors(client, ops_omar, dr_neuro_il, chicago):
    client.force_login(ops_omar)
    response = client.post(
        "/operations/rota/calendar/shifts/new/",
        shift_form(dr_neuro_il, next_monday(), start="25:00"),
        **HTMX,
    )
    assert response.status_code == 200 and "HX-Retarget" not in response
    assert "Enter a time as HH:MM" in response.content.decode()
    assert not Shift.objects.exists()


def test_shifts_from_a_template_are_not_edited_here(client, ops_omar, dr_neuro_il, chicago):
    shift_template_create(
        radiologist=dr_neuro_il,
        name="Nighthawk",
        weekdays=[0, 1, 2, 3, 4, 5, 6],
        start_time=time(23, 0),
        end_time=time(7, 0),
        timezone="America/Chicago",
        valid_from=timezone.now().date(),
        at=timezone.now(),
    )
    shift = Shift.objects.filter(radiologist=dr_neuro_il).first()
    client.force_login(ops_omar)
    assert client.get(f"/operations/rota/calendar/shifts/{shift.pk}/").status_code == 404
    page = client.get(f"/operations/rota/calendar/?week={next_monday()}").content.decode()
    assert "Nighthawk" in page and f'href="/operations/rota/calendar/shifts/{shift.pk}/"' not in page


def test_the_facility_filter_keeps_shifts_that_cover_it(
    client, ops_omar, dr_neuro_il, dr_msk_wi, chicago, lakeview
):
    monday = next_monday()
    client.force_login(ops_omar)
    client.post(
        "/operations/rota/calendar/shifts/new/", shift_form(dr_neuro_il, monday, facilities=[chicago.pk])
    )
    client.post(
        "/operations/rota/calendar/shifts/new/", shift_form(dr_msk_wi, monday, facilities=[lakeview.pk])
    )
    page = client.get(f"/operations/rota/calendar/?week={monday}&facility=CHI-L1").content.decode()
    assert f'data-reader="{dr_neuro_il.username}"' in page
    assert f'data-reader="{dr_msk_wi.username}"' not in page
    assert 'data-facility="CHI-L1"' in page and f'data-facility="{lakeview.code}"' not in page


def test_the_mso_sees_the_calendar_but_cannot_change_shifts(client, mso_mary, dr_neuro_il, chicago):
    Shift.objects.create(
        radiologist=dr_neuro_il,
        starts_at=local_instant(next_monday(), time(8), CHICAGO),
        ends_at=local_instant(next_monday(), time(16), CHICAGO),
    )
    shift = Shift.objects.get()
    client.force_login(mso_mary)
    assert any(item.url_name == "coverage:calendar" for item in navigation_for(mso_mary))
    page = client.get(f"/operations/rota/calendar/?week={next_monday()}")
    assert page.status_code == 200
    html = page.content.decode()
    assert "08:00–16:00" in html and "/operations/rota/calendar/shifts/" not in html
    assert client.get("/operations/rota/calendar/shifts/new/").status_code == 403
    refused = client.post("/operations/rota/calendar/shifts/new/", shift_form(dr_neuro_il, next_monday()))
    assert refused.status_code == 403
    assert client.post(f"/operations/rota/calendar/shifts/{shift.pk}/", {}).status_code == 403
    assert Shift.objects.count() == 1


def test_facility_admins_and_readers_are_refused(client, admin_chicago, dr_neuro_il):
    for user in (admin_chicago, dr_neuro_il):
        client.force_login(user)
        assert client.get("/operations/rota/calendar/").status_code in (302, 403)
        assert client.post("/operations/rota/calendar/shifts/new/", {}).status_code in (302, 403)
    client.force_login(admin_chicago)
    assert client.get("/operations/rota/calendar/").status_code == 403
    assert not any(item.url_name == "coverage:calendar" for item in navigation_for(admin_chicago))


# --- the month view ---------------------------------------------------------------------------

MONTH = "/operations/rota/calendar/month/"


def month_cell(html: str, day) -> str:
    return html.split(f'data-day="{day.isoformat()}"')[1].split("</td>")[0]


def facility_gaps(cell_html: str, code: str) -> str:
    return cell_html.split(f'data-facility="{code}"')[1].split('class="month-gap"')[0]


def test_the_month_shows_each_facilitys_gaps_in_its_own_local_time(
    client, ops_omar, dr_neuro_il, neuro_il_credentials, chicago
):
    from datetime import UTC, date, datetime

    from credentialing.models import FacilityPrivilege, PrivilegeStatus
    from facilities.models import Facility

    # given: a second facility on Denver time where the same reader holds privileges, and one
    # 24-hour shift that is exactly 13 January on Denver's clock (07:00 UTC to 07:00 UTC)
    denver = Facility.objects.create(code="DEN-1", name="Front Range", state="IL", timezone="America/Denver")
    FacilityPrivilege.objects.create(
        profile=dr_neuro_il.radiologist_profile,
        facility=denver,
        status=PrivilegeStatus.APPROVED,
        applied_on=date(2025, 1, 6),
        granted_on=date(2025, 3, 1),
        expires_on=date(2027, 2, 28),
    )
    Shift.objects.create(
        radiologist=dr_neuro_il,
        starts_at=datetime(2027, 1, 13, 7, tzinfo=UTC),
        ends_at=datetime(2027, 1, 14, 7, tzinfo=UTC),
    )
    client.force_login(ops_omar)
    # when operations open January 2027 for all facilities
    response = client.get(f"{MONTH}?month=2027-01")
    assert response.status_code == 200
    html = response.content.decode()
    # then the month runs as whole weeks (Mon 28 Dec to Sun 31 Jan) with the shift on its day
    assert 'data-day="2026-12-28"' in html and 'data-day="2027-01-31"' in html
    assert 'data-day="2027-02-01"' not in html
    day = month_cell(html, date(2027, 1, 13))
    assert str(dr_neuro_il) in day.split('class="month-shifts"')[1].split('class="month-gap"')[0]
    # and each facility's gap is in its own clock: Denver is covered all day, Chicago from 01:00
    assert "Neuroradiology" not in facility_gaps(day, "DEN-1")
    assert "Neuroradiology 00:00–01:00" in facility_gaps(day, "CHI-L1")
    after = month_cell(html, date(2027, 1, 14))
    assert "Neuroradiology 00:00–24:00" in facility_gaps(after, "DEN-1")
    assert "Neuroradiology 01:00–24:00" in facility_gaps(after, "CHI-L1")
    # a facility's own month is in its zone, and shows only that facility
    denver_only = client.get(f"{MONTH}?month=2027-01&facility=DEN-1").content.decode()
    assert "00:00–00:00" in month_cell(denver_only, date(2027, 1, 13))
    assert 'data-facility="CHI-L1"' not in denver_only


def test_a_bad_month_shows_this_month(client, mso_mary, chicago):
    client.force_login(mso_mary)
    response = client.get(f"{MONTH}?month=2027-13")
    assert response.status_code == 200
    this_month = timezone.now().astimezone(CHICAGO).date().replace(day=1)
    assert f'value="{this_month:%Y-%m}"' in response.content.decode()


def test_the_month_view_is_for_operations_and_the_mso_only(
    client, ops_omar, mso_mary, admin_chicago, dr_neuro_il, chicago
):
    for user in (ops_omar, mso_mary):
        client.force_login(user)
        assert client.get(MONTH).status_code == 200
    client.force_login(admin_chicago)
    assert client.get(MONTH).status_code == 403
    client.force_login(dr_neuro_il)
    assert client.get(MONTH).status_code in (302, 403)
    assert b"Front Range" not in client.get(MONTH).content
