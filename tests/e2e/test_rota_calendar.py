"""Operations add a shift from the rota calendar in Chromium: the form opens in place (htmx), and on
saving the calendar shows the shift and the facility's gap for that day is gone."""

from __future__ import annotations

from datetime import time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from tests.e2e.conftest import sign_in
from worklist.coverage import local_instant
from worklist.models import Shift
from worklist.rota_calendar import week_monday

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CHICAGO = ZoneInfo("America/Chicago")


def test_operations_add_a_shift_from_the_calendar(
    live_server, page: Page, ops_omar, dr_neuro_il, neuro_il_credentials, chicago
):
    # given dr_neuro_il on a Monday day shift next week, and nobody on Wednesday
    monday = week_monday(timezone.now().astimezone(CHICAGO).date()) + timedelta(days=7)
    wednesday = monday + timedelta(days=2)
    Shift.objects.create(
        radiologist=dr_neuro_il,
        starts_at=local_instant(monday, time(8), CHICAGO),
        ends_at=local_instant(monday, time(16), CHICAGO),
        note="Day",
    )
    sign_in(page, live_server, ops_omar)
    page.get_by_role("link", name="Rota", exact=True).click()
    page.get_by_role("link", name="Week calendar").click()
    page.get_by_label("Facility").select_option(label="Lakeshore Medical Center")
    page.get_by_label("Week of").fill(monday.isoformat())
    page.get_by_role("button", name="Show").click()
    gap = page.get_by_test_id("calendar-facilities").locator(
        f'tr[data-facility="CHI-L1"] td[data-day="{wednesday}"]'
    )
    expect(gap).to_contain_text("Neuroradiology 00:00–24:00")

    # when operations click "+" on the reader's Wednesday and add a whole-day neuro shift
    row = page.get_by_test_id("calendar-readers").locator(f'tr[data-reader="{dr_neuro_il.username}"]')
    row.locator(f'td[data-day="{wednesday}"]').get_by_role("link").click()
    form = page.get_by_test_id("shift-form")
    expect(form.get_by_label("Day it starts")).to_have_value(wednesday.isoformat())
    form.get_by_label("Starts at (local time)").fill("00:00")
    form.get_by_label("Ends at (local time)").fill("00:00")
    form.get_by_label("Lakeshore Medical Center (IL)").check()
    form.get_by_label("Neuroradiology").check()
    form.get_by_label("Note (optional)").fill("Cover")
    form.get_by_role("button", name="Add shift").click()

    # then the calendar (swapped in place, the form gone) shows the shift and the gap is closed
    expect(page.get_by_test_id("shift-form")).to_have_count(0)
    expect(row.locator(f'td[data-day="{wednesday}"]')).to_contain_text("00:00–00:00 Cover")
    expect(gap).not_to_contain_text("Neuroradiology")
    assert Shift.objects.filter(radiologist=dr_neuro_il).count() == 2
