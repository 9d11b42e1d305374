"""The operations desk's coverage pages: who is on now, and the 7-day grid — for operations (and
superusers) only."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.navigation import navigation_for
from tests.worklist.conftest import make_study
from worklist.coverage import HORIZON_DAYS
from worklist.models import Shift, StudyAssignment
from worklist.services import study_claim, study_route

pytestmark = pytest.mark.django_db

PAGES = ["/operations/on-now/", "/operations/coverage/"]


def test_on_now_lists_the_reader_with_scope_and_load(client, ops_omar, neuro_reader, chicago):
    # given dr_neuro_il on shift, holding a head CT worth 1.5 RVU
    study = make_study(chicago, code="70450")
    study_route(study_id=study.pk)
    study_claim(study_id=study.pk, user=neuro_reader, at=timezone.now())
    StudyAssignment.objects.filter(study=study).update(rvu=Decimal("1.50"))
    # when operations opens "on now"
    client.force_login(ops_omar)
    page = client.get("/operations/on-now/")
    # then the reader is listed with an unlimited scope and the load
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-reader="dr_neuro_il"' in html
    assert "all facilities" in html and "all subspecialties" in html
    assert '<td data-testid="rvu-load">1.50</td>' in html


def test_on_now_says_why_it_is_empty(client, ops_omar):
    client.force_login(ops_omar)
    assert b"Nobody is on shift now" in client.get("/operations/on-now/").content


def test_the_grid_is_red_for_an_il_facility_when_only_a_wi_reader_is_on(
    client, ops_omar, dr_msk_wi, msk_wi_credentials, chicago, lakeview
):
    # given the WI-licensed MSK reader on shift for the whole week
    now = timezone.now()
    Shift.objects.create(
        radiologist=dr_msk_wi, starts_at=now - timedelta(hours=1), ends_at=now + timedelta(days=9)
    )
    # when operations opens the grid
    client.force_login(ops_omar)
    html = client.get("/operations/coverage/").content.decode()
    # then Lakeshore MSK is red every day, Lakeview MSK covered every day
    chicago_row = html.split('data-facility="CHI-L1" data-subspecialty="msk"')[1].split("</tr>")[0]
    lakeview_row = html.split('data-facility="WI-LAKEVIEW" data-subspecialty="msk"')[1].split("</tr>")[0]
    assert chicago_row.count('class="cov-gap"') == 7 and "no reader" in chicago_row
    assert lakeview_row.count('class="cov-ok"') == 7 and "Covered by Dr dr_msk_wi" in lakeview_row


def test_the_grid_can_show_one_facility(client, ops_omar, chicago, lakeview):
    client.force_login(ops_omar)
    html = client.get("/operations/coverage/", {"facility": "WI-LAKEVIEW"}).content.decode()
    assert 'data-facility="WI-LAKEVIEW"' in html and 'data-facility="CHI-L1"' not in html


def test_a_superuser_may_look(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", password="x" * 20))
    assert all(client.get(page).status_code == 200 for page in PAGES)


@pytest.mark.parametrize("page", PAGES)
def test_a_radiologist_is_refused(verified_client, neuro_reader, page):
    assert verified_client(neuro_reader).get(page).status_code == 403


@pytest.mark.parametrize("who", ["mso_mary", "admin_chicago"])
@pytest.mark.parametrize("page", PAGES)
def test_credentialing_staff_and_facility_admins_are_refused(request, client, who, page):
    client.force_login(request.getfixturevalue(who))
    assert client.get(page).status_code == 403


def test_anonymous_is_sent_to_sign_in(client):
    assert client.get(PAGES[0]).status_code == 302


def test_the_pages_are_in_operations_navigation_only(ops_omar, neuro_reader, admin_chicago):
    def labels(user):
        return {item.label for item in navigation_for(user)}

    assert {"On now", "Coverage"} <= labels(ops_omar)
    assert not {"On now", "Coverage"} & (labels(neuro_reader) | labels(admin_chicago))


def test_operations_keep_the_rota_in_the_admin(client, ops_omar, dr_neuro_il, chicago):
    from worklist.models import ShiftTemplate, TimeOff

    client.force_login(ops_omar)
    # when operations add a weekday nighthawk template …
    response = client.post(
        "/admin/worklist/shifttemplate/add/",
        {
            "radiologist": dr_neuro_il.pk,
            "name": "Nighthawk",
            "weekdays": "[0, 1, 2, 3, 4]",
            "start_time": "23:00",
            "end_time": "07:00",
            "timezone": "America/Chicago",
            "valid_from": timezone.localdate().isoformat(),
            "facilities": [chicago.pk],
            "active": "on",
        },
    )
    # … its shifts of the horizon exist at once (about ten in the first fortnight), limited to Lakeshore
    assert response.status_code == 302, response.content.decode()[:2000]
    template = ShiftTemplate.objects.get()
    shifts = Shift.objects.filter(template=template)
    assert 9 <= shifts.filter(starts_at__lt=timezone.now() + timedelta(days=14)).count() <= 11
    assert shifts.filter(starts_at__gt=timezone.now() + timedelta(days=HORIZON_DAYS - 7)).exists()
    assert all(list(s.facilities.all()) == [chicago] for s in shifts)
    # when they record three weeks of time off
    now = timezone.now()
    response = client.post(
        "/admin/worklist/timeoff/add/",
        {
            "radiologist": dr_neuro_il.pk,
            "starts_at_0": (now - timedelta(days=1)).date().isoformat(),
            "starts_at_1": "00:00",
            "ends_at_0": (now + timedelta(days=20)).date().isoformat(),
            "ends_at_1": "00:00",
            "reason": "parental leave",
        },
    )
    # then the shifts in those three weeks are gone (the later ones stay) and the time off records
    # who entered it
    assert response.status_code == 302, response.content.decode()[:2000]
    away_until = (now + timedelta(days=20)).replace(hour=0, minute=0)
    assert not Shift.objects.filter(
        radiologist=dr_neuro_il, starts_at__lt=away_until - timedelta(days=1)
    ).exists()
    assert Shift.objects.filter(
        radiologist=dr_neuro_il, starts_at__gt=away_until + timedelta(days=1)
    ).exists()
    assert TimeOff.objects.get().recorded_by == ops_omar


def test_on_now_shows_a_rota_shift_in_its_own_zone(client, ops_omar, dr_neuro_il, chicago):
    from datetime import date

    from worklist.coverage import shift_template_create

    # given a nighthawk line written in Chicago time, on tonight
    now = timezone.now()
    local_now = now.astimezone(chicago.zone)
    start = (local_now - timedelta(hours=1)).time().replace(second=0, microsecond=0)
    end = (local_now + timedelta(hours=2)).time().replace(second=0, microsecond=0)
    shift_template_create(
        radiologist=dr_neuro_il,
        name="Evening",
        weekdays=list(range(7)),
        start_time=start,
        end_time=end,  # may be after midnight: the next day
        timezone="America/Chicago",
        valid_from=date(2026, 1, 1),
        at=now,
    )
    client.force_login(ops_omar)
    html = client.get("/operations/on-now/").content.decode()
    # then its times read in Chicago's zone (CST/CDT), the UTC instant in the tooltip
    assert f"{start:%H:%M} C" in html and ' UTC"' in html
