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
from tests.e2e.conftest import RequestsHeld, sign_in

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


# --- the fallback viewer's tools (issue #12) --------------------------------------------------------


def _stage_centre(page: Page) -> tuple[float, float]:
    box = page.get_by_test_id("stage").bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def test_window_level_by_drag_zoom_pan_and_invert(live_server, page: Page, ops_omar, head_ct):
    sign_in(page, live_server, ops_omar)
    page.goto(f"{live_server.url}/studies/{head_ct.pk}/viewer/")
    frame = page.get_by_test_id("frame")
    expect(frame).to_have_attribute("data-loaded-src", re.compile(r"/frames/1/rendered$"))
    expect(page.locator('.preset[data-preset="1"]')).to_be_visible()  # HU presets on a CT

    # a drag changes the window: the server renders the slice in it
    x, y = _stage_centre(page)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 80, y + 40, steps=6)
    page.mouse.up()
    expect(page.get_by_test_id("window-label")).to_have_text(re.compile(r"^W \d+ L -?\d+$"))
    expect(frame).to_have_attribute(
        "data-loaded-src", re.compile(r"/frames/1/rendered\?window=-?[\d.]+,[\d.]+$")
    )

    # + zooms, Shift+drag pans, I inverts, R resets all of it and the window
    page.keyboard.press("+")
    expect(frame).to_have_attribute("data-zoom", "1.25")
    page.keyboard.down("Shift")
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 50, y + 20, steps=4)
    page.mouse.up()
    page.keyboard.up("Shift")
    assert "translate(50px, 20px)" in frame.evaluate("img => img.style.transform")
    page.keyboard.press("i")
    expect(frame).to_have_attribute("data-invert", "true")
    expect(page.get_by_test_id("invert")).to_have_attribute("aria-pressed", "true")
    page.keyboard.press("r")
    expect(frame).to_have_attribute("data-zoom", "1.00")
    expect(frame).to_have_attribute("data-invert", "false")
    expect(page.get_by_test_id("window-label")).to_have_text("Window: image default")


@pytest.fixture
def fast_ct(settings, tmp_path, chicago) -> Study:
    settings.READROOM_STORAGE_DIR = tmp_path / "storage"
    settings.READROOM_STORAGE_FSYNC = False
    storage._keys.cache_clear()
    cache.clear()
    series = ct_series(count=12, accession="ACC-E2E-12", size=256)
    for part10 in series.part10():
        assert dicom_instance_receive(facility=chicago, part10=part10).ok
    yield Study.objects.get(study_instance_uid=series.study_uid)
    storage._keys.cache_clear()
    cache.clear()


def test_fast_scrolling_shows_every_slice_in_order(live_server, page: Page, ops_omar, fast_ct):
    # given a 12-slice CT not yet seen, its requests slowed so that nothing is cached in time
    sign_in(page, live_server, ops_omar)

    def slow(route):
        page.wait_for_timeout(60)
        route.continue_()

    page.route(re.compile(r".*/frames/\d+/rendered.*"), slow)
    page.goto(f"{live_server.url}/studies/{fast_ct.pk}/viewer/")
    counter = page.get_by_test_id("instance-counter")
    expect(counter).to_have_text("1 / 12")

    # when the reader spins the wheel through the stack in one go
    page.get_by_test_id("stage").hover()
    for _ in range(11):
        page.mouse.wheel(0, 100)

    # then every slice was shown on the way, in order, and the last one stays
    expect(counter).to_have_text("12 / 12")
    shown = page.evaluate("() => window.readroomViewer.shownLog")
    assert shown == list(range(1, 13)), shown


@pytest.fixture
def enhanced_mr(settings, tmp_path, chicago) -> Study:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    settings.READROOM_STORAGE_DIR = tmp_path / "storage"
    settings.READROOM_STORAGE_FSYNC = False
    storage._keys.cache_clear()
    cache.clear()
    part10 = open(get_testdata_file("emri_small.dcm"), "rb").read()  # noqa: SIM115  (10 frames)
    assert dicom_instance_receive(facility=chicago, part10=part10).ok
    uid = dcmread(get_testdata_file("emri_small.dcm"), stop_before_pixels=True).StudyInstanceUID
    yield Study.objects.get(study_instance_uid=uid)
    storage._keys.cache_clear()
    cache.clear()


def test_every_frame_of_a_multiframe_mr_with_cine_and_no_hu_presets(
    live_server, page: Page, ops_omar, enhanced_mr
):
    sign_in(page, live_server, ops_omar)
    page.goto(f"{live_server.url}/studies/{enhanced_mr.pk}/viewer/")
    counter = page.get_by_test_id("instance-counter")
    frame = page.get_by_test_id("frame")
    expect(counter).to_have_text("1 / 10")  # one instance, ten frames
    expect(page.locator('.preset[data-preset="1"]')).to_be_hidden()  # no Hounsfield presets on MR
    page.keyboard.press("1")
    expect(page.get_by_test_id("window-label")).to_have_text("Window: image default")
    page.keyboard.press("End")
    expect(counter).to_have_text("10 / 10")
    expect(frame).to_have_attribute("data-loaded-src", re.compile(r"/frames/10/rendered$"))
    assert frame.evaluate("img => img.naturalWidth") == 64
    page.keyboard.press("Home")
    expect(counter).to_have_text("1 / 10")

    # cine plays the frames in order, and stops
    page.keyboard.press("c")
    expect(page.get_by_test_id("cine")).to_have_attribute("aria-pressed", "true")
    expect(counter).to_have_text(re.compile(r"^[4-9] / 10|^10 / 10"), timeout=15_000)
    page.keyboard.press("c")
    expect(page.get_by_test_id("cine")).to_have_attribute("aria-pressed", "false")
    stopped = counter.inner_text()
    page.wait_for_timeout(500)
    assert counter.inner_text() == stopped


# --- an AI finding's flagged image first (issue #18) -------------------------------------------------


@pytest.fixture
def flagged_head_ct(settings, tmp_path, chicago) -> tuple[Study, str]:
    """A head CT of two series whose AI SR (highdicom TID 1500, ICH present) flags the middle slice
    of the second, received by the SCP's path; and that slice's SOP Instance UID."""
    from tests.ai_data import ai_sr
    from tests.dicom_data import part10_bytes

    settings.READROOM_STORAGE_DIR = tmp_path / "storage"
    settings.READROOM_STORAGE_FSYNC = False
    storage._keys.cache_clear()
    cache.clear()
    scout = ct_series(count=2, accession="ACC-E2E-AI", series_number=1, series_description="SCOUT")
    axial = ct_series(count=5, accession="ACC-E2E-AI", study_uid=scout.study_uid, series_number=2)
    for part10 in [*scout.part10(), *axial.part10()]:
        assert dicom_instance_receive(facility=chicago, part10=part10).ok
    sr = ai_sr(list(axial.datasets))
    assert dicom_instance_receive(facility=chicago, part10=part10_bytes(sr)).ok
    yield Study.objects.get(study_instance_uid=scout.study_uid), axial.sop_uids[2]
    storage._keys.cache_clear()
    cache.clear()


def test_choosing_a_series_while_a_slice_is_in_flight_shows_that_series(
    live_server, page: Page, ops_omar, flagged_head_ct
):
    # given the viewer opening on the flagged series, its first slice held on the way
    study, _ = flagged_head_ct
    slices = RequestsHeld(page, re.compile(r"/rendered(\?|$)"))
    sign_in(page, live_server, ops_omar)
    page.goto(f"{live_server.url}/studies/{study.pk}/viewer/")
    slices.wait_for_one()
    # when the reader picks the scout before that slice arrives
    page.locator('.series-button[data-series-index="0"]').click()
    slices.release()
    # then the scout is shown (the late slice neither paints nor stops the viewer)
    expect(page.get_by_test_id("instance-counter")).to_have_text("1 / 2")
    expect(page.get_by_test_id("series-label")).not_to_contain_text("#2")
    frame = page.get_by_test_id("frame")
    expect(frame).to_have_attribute("data-loaded-src", re.compile(r"/frames/1/rendered"))


def test_a_study_an_ai_flagged_opens_at_the_findings_first_image(
    live_server, page: Page, ops_omar, flagged_head_ct
):
    study, flagged_sop = flagged_head_ct
    # when the study the AI flagged is opened in the built-in viewer
    sign_in(page, live_server, ops_omar)
    page.goto(f"{live_server.url}/studies/{study.pk}/viewer/")
    # then it opens on the flagged slice of the flagged series, and says why
    frame = page.get_by_test_id("frame")
    expect(frame).to_have_attribute("data-loaded-src", re.compile(re.escape(f"/instances/{flagged_sop}/")))
    expect(page.get_by_test_id("instance-counter")).to_have_text("3 / 5")
    expect(page.get_by_test_id("series-label")).to_contain_text("#2")
    expect(page.get_by_test_id("ai-start")).to_contain_text("Cerebral hemorrhage positive (p=0.93)")
    flagged_series = page.locator('.series-button[data-series-index="1"]')
    expect(flagged_series).to_have_attribute("aria-pressed", "true")
    expect(flagged_series.get_by_test_id("ai-flagged-series")).to_be_visible()
    # and it is the whole stack: Home goes to its first slice, the scout is one click away
    page.keyboard.press("Home")
    expect(page.get_by_test_id("instance-counter")).to_have_text("1 / 5")
    page.locator('.series-button[data-series-index="0"]').click()
    expect(page.get_by_test_id("instance-counter")).to_have_text("1 / 2")
