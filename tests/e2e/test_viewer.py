"""The viewer in Chromium: the stack scrolls with the keyboard, presets re-render the frame, the
shortcut list opens with "?" — frames rendered by the live server from encrypted files."""

import re

import pytest
from django.core.cache import cache
from playwright.sync_api import Page, expect

from imaging import storage
from imaging.models import Study
from interfaces.dicom.receive import dicom_instance_receive
from tests.dicom_data import ct_series
from tests.e2e.conftest import sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def head_ct(settings, tmp_path, chicago) -> Study:
    settings.READROOM_STORAGE_DIR = tmp_path / "storage"
    settings.READROOM_STORAGE_FSYNC = False
    storage._keys.cache_clear()
    cache.clear()
    series = ct_series(count=5, accession="ACC-E2E-1", size=256)
    for part10 in series.part10():
        assert dicom_instance_receive(facility=chicago, part10=part10).ok
    yield Study.objects.get(study_instance_uid=series.study_uid)
    storage._keys.cache_clear()
    cache.clear()


def test_scrolling_the_stack_and_switching_presets_by_keyboard(live_server, page: Page, ops_omar, head_ct):
    # given operations signed in, opening a five-slice head CT
    sign_in(page, live_server, ops_omar)
    page.goto(f"{live_server.url}/studies/{head_ct.pk}/viewer/")
    frame = page.get_by_test_id("frame")
    counter = page.get_by_test_id("instance-counter")
    expect(page.get_by_test_id("patient-name")).to_have_text("QUINLAN, JANE")
    expect(counter).to_have_text("1 / 5")
    expect(frame).to_have_attribute("src", re.compile(r"^blob:"))
    first_src = frame.get_attribute("src")

    # when the radiologist presses the down arrow, the next slice is shown
    page.keyboard.press("ArrowDown")
    expect(counter).to_have_text("2 / 5")
    expect(frame).not_to_have_attribute("src", first_src)
    page.keyboard.press("End")
    expect(counter).to_have_text("5 / 5")
    page.keyboard.press("Home")
    expect(counter).to_have_text("1 / 5")
    page.keyboard.press("ArrowDown")
    expect(counter).to_have_text("2 / 5")
    expect(frame).to_have_attribute("data-loaded-src", re.compile(re.escape("/frames/1/rendered")))
    before = frame.get_attribute("src")

    # and "1" applies the brain window: a new frame from the server, windowed 40/80
    page.keyboard.press("1")
    expect(frame).to_have_attribute("data-loaded-src", re.compile(re.escape("window=40,80")))
    expect(frame).not_to_have_attribute("src", before)
    expect(page.get_by_test_id("window-label")).to_contain_text("Brain")
    expect(page.locator('.preset[data-preset="1"]')).to_have_attribute("aria-pressed", "true")
    page.keyboard.press("5")
    expect(frame).to_have_attribute("data-loaded-src", re.compile(re.escape("window=-600,1500")))
    natural_width = frame.evaluate("img => img.naturalWidth")
    assert natural_width == 256

    # "?" lists the shortcuts; Escape closes the list
    page.keyboard.press("?")
    expect(page.get_by_test_id("help-overlay")).to_be_visible()
    expect(page.get_by_test_id("help-overlay")).to_contain_text("next image")
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("help-overlay")).to_be_hidden()

    # the mouse wheel scrolls the stack too
    page.get_by_test_id("stage").hover()
    page.mouse.wheel(0, 120)
    expect(counter).to_have_text("3 / 5")
