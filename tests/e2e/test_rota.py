"""Operations keep the rota in Chromium: a nighthawk created with the weekday checkboxes covers the
night in the coverage grid at once, and time off for that reader turns it red again."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from tests.e2e.conftest import sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CHICAGO = ZoneInfo("America/Chicago")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def gap_at(page: Page, facility: str, subspecialty: str, day: str, clock: str) -> bool:
    """Whether the grid cell lists a gap (facility local time) that contains ``clock``."""
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Coverage", exact=True).click()
    cell = page.locator(
        f'tr[data-facility="{facility}"][data-subspecialty="{subspecialty}"] td[data-day="{day}"]'
    )
    expect(cell).to_be_visible()
    labels = [line for line in cell.inner_text().splitlines() if "–" in line]
    return any(start <= clock < end for start, end in (label.split("–") for label in labels))


def test_operations_cover_a_night_with_a_nighthawk_and_time_off_uncovers_it(
    live_server, page: Page, ops_omar, dr_neuro_il, neuro_il_credentials, chicago
):
    # given a neuro reader licensed and privileged at Lakeshore but on no shift: tomorrow is red at 02:00
    today = timezone.now().astimezone(CHICAGO).date()
    tomorrow = (today + timedelta(days=1)).isoformat()
    sign_in(page, live_server, ops_omar)
    assert gap_at(page, "CHI-L1", "neuro", tomorrow, "02:00")

    # when operations create an every-night nighthawk for Lakeshore neuro on the rota page
    page.get_by_role("link", name="Rota", exact=True).click()
    page.get_by_role("link", name="New shift template").click()
    page.get_by_label("Reader").select_option(label=f"{dr_neuro_il} ({dr_neuro_il.username})")
    page.get_by_label("Name").fill("Nighthawk")
    for day in WEEKDAYS:
        page.get_by_label(day, exact=True).check()
    page.get_by_label("Starts at (local time)").fill("23:00")
    page.get_by_label("Ends at (local time)").fill("07:00")
    expect(page.get_by_label("Time zone")).to_have_value("America/Chicago")
    page.get_by_label("Lakeshore Medical Center (IL)").check()
    page.get_by_label("Neuroradiology").check()
    page.get_by_role("button", name="Create template").click()

    # then the rota describes it, and the grid covers Lakeshore neuro at 02:00 tomorrow
    row = page.get_by_test_id("rota-templates").locator(f'tr[data-reader="{dr_neuro_il.username}"]')
    expect(row.get_by_test_id("template-description")).to_have_text(
        "Every day 23:00–07:00 America/Chicago, neuro, Lakeshore Medical Center"
    )
    assert not gap_at(page, "CHI-L1", "neuro", tomorrow, "02:00")
    assert gap_at(page, "CHI-L1", "msk", tomorrow, "02:00")  # the scope holds: neuro only

    # when the reader is off sick for three days
    page.get_by_role("link", name="Rota", exact=True).click()
    page.get_by_role("link", name=f"Record time off for {dr_neuro_il}").click()
    expect(page.get_by_label("Reader")).to_have_value(str(dr_neuro_il.pk))
    page.get_by_label("Away from (local time)").fill(f"{today.isoformat()}T00:00")
    page.get_by_label("Back at (local time)").fill(f"{(today + timedelta(days=3)).isoformat()}T00:00")
    page.get_by_label("Reason").fill("sick")
    page.get_by_role("button", name="Record time off").click()

    # then the rota says which shifts it took away, and tomorrow 02:00 is red again
    expect(page.locator(".messages")).to_contain_text("Nighthawk")
    expect(page.locator(".messages")).to_contain_text("removed")
    expect(page.get_by_test_id("rota-time-off")).to_contain_text("sick")
    assert gap_at(page, "CHI-L1", "neuro", tomorrow, "02:00")
