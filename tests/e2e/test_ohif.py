"""OHIF v3 (installed by `make ohif`) reading ReadRoom's DICOMweb in Chromium, on the same origin:
a reader opens a claimed study from the worklist, the first image is drawn, the wheel scrolls, a
drag changes the window, a length measurement is saved as an SR and is listed in the report editor;
no image request fails. Without the install these tests skip, except in CI (READROOM_REQUIRE_E2E=1)."""

from __future__ import annotations

import os
import re

import pytest
from django.core.cache import cache
from django.utils import timezone
from playwright.sync_api import Browser, Frame, Page, expect

from imaging import storage
from imaging.models import Series, Study
from imaging.ohif import ohif_available
from interfaces.dicom.receive import dicom_instance_receive
from tests.dicom_data import ct_series
from tests.e2e.conftest import CHROMIUM, OFFLINE_FLAGS, csp_violations_watched, sign_in
from tests.reports.conftest import ct_head_template, head_ct_study  # noqa: F401
from tests.worklist.conftest import neuro_reader  # noqa: F401
from worklist.services import study_claim

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Headless Chromium has no GPU here: WebGL (Cornerstone3D's renderer) runs on SwiftShader, the
# software rasteriser Chromium ships. Only these tests need it, so they launch their own browser.
OHIF_FLAGS = [f for f in OFFLINE_FLAGS if f != "--disable-gpu"] + [
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
]


@pytest.fixture(scope="session")
def ohif_installed() -> None:
    if ohif_available():
        return
    message = "OHIF is not installed: `make ohif` (needs npm)"
    if os.environ.get("READROOM_REQUIRE_E2E") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def ohif_browser(playwright, ohif_installed) -> Browser:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=OHIF_FLAGS)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def ohif_context(ohif_browser: Browser):
    """One context for the run: OHIF's ~25 MB of scripts are fetched once (its HTTP cache), not
    once per test; each test starts signed out."""
    context = ohif_browser.new_context(viewport={"width": 1200, "height": 800})
    yield context
    context.close()


@pytest.fixture
def ohif_page(ohif_context):
    """Every test reads under the CSP OHIF's page is served with: a violation fails it."""
    ohif_context.clear_cookies()
    page = ohif_context.new_page()
    page.set_default_timeout(30_000)
    violations = csp_violations_watched(page)
    yield page
    page.close()
    assert violations == [], violations


@pytest.fixture
def image_storage(settings, tmp_path):
    settings.READROOM_STORAGE_DIR = tmp_path / "storage"
    settings.READROOM_STORAGE_FSYNC = False
    storage._keys.cache_clear()
    cache.clear()
    yield
    storage._keys.cache_clear()
    cache.clear()


class DicomWebWatch:
    """Every DICOMweb response the page gets: none may fail."""

    def __init__(self, page: Page) -> None:
        self.responses: list[tuple[int, str, str]] = []
        page.on("response", self._seen)

    def _seen(self, response) -> None:
        if "/dicomweb/" in response.url:
            self.responses.append((response.status, response.request.method, response.url))

    def failures(self) -> list[tuple[int, str, str]]:
        return [r for r in self.responses if r[0] >= 400]

    def frames(self) -> list[str]:
        return [url for _, _, url in self.responses if "/frames/" in url]

    def thumbnails(self) -> list[str]:
        return [url for status, _, url in self.responses if url.split("?")[0].endswith("/thumbnail")]


def received(facility, series) -> None:
    for part10 in series.part10():
        assert dicom_instance_receive(facility=facility, part10=part10).ok


def overlay(page: Page, corner: str) -> str:
    return page.locator(f'[data-cy="viewport-overlay-{corner}"]').inner_text().replace("\n", " ")


def viewer_opened_from_worklist(page: Page, server, study) -> None:
    page.goto(f"{server.url}/worklist/")
    row = page.get_by_test_id("study-row").filter(has_text=study.accession_number)
    row.get_by_role("link", name="Open").click()
    expect(page).to_have_url(re.compile(r"/ohif/viewer\?StudyInstanceUIDs="))
    page.wait_for_function("() => window.crossOriginIsolated === true")
    first_image_drawn(page)


def first_image_drawn(page: Page | Frame) -> None:
    page.wait_for_selector(".cornerstone-canvas", timeout=90_000)
    # drawn = the canvas has pixels that are not background
    page.wait_for_function(
        """() => {
            const canvas = document.querySelector('.cornerstone-canvas');
            if (!canvas || !canvas.width) return false;
            const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            let lit = 0;
            for (let i = 0; i < data.length; i += 4) if (data[i] + data[i + 1] + data[i + 2] > 30) lit++;
            return lit > 1000;
        }""",
        timeout=90_000,
    )


def scrolled_and_windowed(page: Page) -> tuple[float, float]:
    """The wheel moves to another image; a drag (the default left-button tool) changes the window."""
    box = page.locator(".cornerstone-canvas").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    before = overlay(page, "bottom-right")
    page.mouse.move(cx, cy)
    page.mouse.wheel(0, 120)
    expect(page.locator('[data-cy="viewport-overlay-bottom-right"]')).not_to_have_text(before)
    window = overlay(page, "bottom-left")
    page.mouse.down()
    page.mouse.move(cx + 120, cy + 60, steps=8)
    page.mouse.up()
    expect(page.locator('[data-cy="viewport-overlay-bottom-left"]')).not_to_have_text(window)
    return cx, cy


def drag(page: Page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=8)
    page.mouse.up()


def measurements_saved_as_sr(page: Page, name: str) -> None:
    page.locator('[data-cy="trackedMeasurements-btn"]').click()
    page.get_by_role("button", name="Create SR").click()
    page.get_by_placeholder("Report name").fill(name)
    stow = re.compile(r".*/dicomweb/studies$")
    with page.expect_response(lambda r: stow.match(r.url) and r.request.method == "POST") as r:
        page.get_by_role("button", name="Save").click()
    assert r.value.status == 200, r.value.text()


@pytest.fixture
def claimed_ct(image_storage, neuro_reader, chicago, ct_head_template) -> Study:  # noqa: F811
    """A claimed head CT of 6 slices at Lakeshore, its images received by the SCP's path (made
    before the browser: the claim's broadcast cannot run beside Playwright's event loop)."""
    study = head_ct_study(chicago)
    ct = ct_series(count=6, study_uid=study.study_instance_uid, accession=study.accession_number)
    received(chicago, ct)
    study_claim(study_id=study.pk, user=neuro_reader, at=timezone.now())
    return study


def test_reader_reads_a_claimed_ct_in_ohif_and_saves_measurements(
    live_server,
    claimed_ct: Study,
    ohif_page: Page,
    neuro_reader,  # noqa: F811
):
    # given a claimed head CT (the fixture)
    study = claimed_ct
    counts = Study.objects.values_list("number_of_instances", "number_of_series", "last_received_at").get(
        pk=study.pk
    )
    page = ohif_page
    watch = DicomWebWatch(page)
    sign_in(page, live_server, neuro_reader)

    # when the reader opens it from the worklist, the first image is drawn, in a cross-origin
    # isolated page (SharedArrayBuffer for MPR)
    viewer_opened_from_worklist(page, live_server, study)
    cx, cy = scrolled_and_windowed(page)

    # and they measure a length (tracking the series when asked), an elliptical ROI and an angle
    page.locator('[data-cy="Length"]').first.click()
    drag(page, (cx - 100, cy), (cx + 100, cy))
    page.get_by_role("button", name="Yes", exact=True).click()
    page.locator('[data-cy="MeasurementTools-split-button-secondary"]').click()
    page.locator('[data-cy="EllipticalROI"]').click()
    drag(page, (cx - 40, cy - 120), (cx + 40, cy - 60))
    page.locator('[data-cy="MoreTools-split-button-secondary"]').click()
    page.locator('[data-cy="Angle"]').click()
    drag(page, (cx - 120, cy + 100), (cx - 40, cy + 160))
    page.mouse.click(cx + 40, cy + 100)
    measurements_saved_as_sr(page, "Head CT measurements")
    assert not watch.failures(), watch.failures()
    assert watch.frames(), "OHIF fetched no frames"
    assert watch.thumbnails(), "OHIF drew its series thumbnails from no …/thumbnail"

    # then the SR is kept with the study without counting as its images or restarting its quiet period
    sr = Series.objects.get(study=study, made_by=neuro_reader)
    assert sr.modality == "SR" and sr.number_of_instances == 1
    assert (
        Study.objects.values_list("number_of_instances", "number_of_series", "last_received_at").get(
            pk=study.pk
        )
        == counts
    )

    # and the report editor lists the measurements, ready to insert as text
    page.goto(f"{live_server.url}/studies/{study.pk}/report/")
    items = page.get_by_test_id("measurement")
    expect(items).to_have_count(3)
    texts = items.all_inner_texts()
    assert any(re.match(r"Length: \d+ mm, series 2 image \d", t) for t in texts), texts
    assert any(re.search(r"ROI: area [\d.]+ mm², mean -?[\d.]+ HU", t) for t in texts), texts
    assert any(re.match(r"Angle: [\d.]+°", t) for t in texts), texts
    findings = page.locator("textarea[data-macro-target]").first
    findings.click()
    items.filter(has_text="Length").get_by_role("button", name=re.compile("Insert")).click()
    expect(findings).to_have_value(re.compile(r"Length: \d+ mm, series 2 image \d"))

    # and side by side (docs/viewer.md "One reading screen") OHIF draws the study in the editor's
    # pane: framed by this origin, its page still under its own CSP (no violation: ohif_page)
    page.get_by_test_id("layout-side").click()
    expect(page.get_by_test_id("reading-pane")).to_be_visible()
    pane = page.frame(name="readroom-pane")
    pane.wait_for_url(re.compile(r"/ohif/viewer\?StudyInstanceUIDs=" + re.escape(study.study_instance_uid)))
    first_image_drawn(pane)
    # cross-origin isolated inside the pane too (SharedArrayBuffer: volume/MPR at full speed there)
    assert page.evaluate("window.crossOriginIsolated") is True
    assert pane.evaluate("window.crossOriginIsolated && typeof SharedArrayBuffer === 'function'") is True
    expect(findings).to_be_visible()
    assert page.evaluate("document.activeElement.tagName") != "IFRAME"  # the keyboard stays the editor's


def _mr_from_testdata(name: str, study: Study, copies: int) -> list[bytes]:
    """pydicom's test file, as ``copies`` instances of a new series of ``study``, in its own syntax."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    from tests.dicom_data import UID_PREFIX, part10_bytes

    series_uid = generate_uid(prefix=UID_PREFIX)
    out = []
    for number in range(1, copies + 1):
        ds = dcmread(get_testdata_file(name))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study.study_instance_uid, series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(prefix=UID_PREFIX)
        ds.AccessionNumber, ds.InstanceNumber, ds.SeriesNumber = study.accession_number, number, 4
        out.append(part10_bytes(ds))
    return out


@pytest.fixture(params=["MR_small_jpeg_ls_lossless.dcm", "emri_small.dcm"], ids=["jpeg-ls-mr", "enhanced-mr"])
def claimed_mr(request, image_storage, neuro_reader, chicago, ct_head_template) -> Study:  # noqa: F811
    """A claimed MR: three JPEG-LS instances (the file as stored, decoded in the browser), or one
    Enhanced MR instance of 10 frames."""
    study = head_ct_study(chicago, modalities="MR", description="MR BRAIN")
    copies = 3 if "jpeg_ls" in request.param else 1
    for part10 in _mr_from_testdata(request.param, study, copies):
        assert dicom_instance_receive(facility=chicago, part10=part10).ok
    study_claim(study_id=study.pk, user=neuro_reader, at=timezone.now())
    return study


def test_reader_reads_a_jpeg_ls_and_an_enhanced_multiframe_mr_in_ohif(
    live_server,
    claimed_mr: Study,
    ohif_page: Page,
    neuro_reader,  # noqa: F811
):
    study = claimed_mr
    page = ohif_page
    watch = DicomWebWatch(page)
    sign_in(page, live_server, neuro_reader)
    viewer_opened_from_worklist(page, live_server, study)
    cx, cy = scrolled_and_windowed(page)
    page.locator('[data-cy="Length"]').first.click()
    drag(page, (cx - 80, cy), (cx + 80, cy))
    page.get_by_role("button", name="Yes", exact=True).click()
    measurements_saved_as_sr(page, "MR measurements")
    assert not watch.failures(), watch.failures()
    assert watch.frames(), "OHIF fetched no frames"
    page.goto(f"{live_server.url}/studies/{study.pk}/report/")
    expect(page.get_by_test_id("measurement")).to_have_count(1)
    expect(page.get_by_test_id("measurement")).to_contain_text(
        re.compile(r"Length: [\d.]+ mm, series 4 image \d")
    )


def test_ohif_opens_a_study_an_ai_flagged_at_the_flagged_series_and_image(
    live_server,
    image_storage,
    ohif_page: Page,
    neuro_reader,  # noqa: F811
    chicago,
    ct_head_template,  # noqa: F811
):
    from tests.ai_data import ai_sr
    from tests.dicom_data import part10_bytes

    # given a claimed head CT of two series; the AI's SR (ICH present) flags the axial's 3rd of 5 slices
    study = head_ct_study(chicago)
    scout = ct_series(
        count=2, study_uid=study.study_instance_uid, accession=study.accession_number,
        series_number=1, series_description="SCOUT",
    )  # fmt: skip
    axial = ct_series(
        count=5, study_uid=study.study_instance_uid, accession=study.accession_number,
        series_number=2, series_description="AXIAL FLAGGED",
    )  # fmt: skip
    received(chicago, scout)
    received(chicago, axial)
    assert dicom_instance_receive(facility=chicago, part10=part10_bytes(ai_sr(list(axial.datasets)))).ok
    study_claim(study_id=study.pk, user=neuro_reader, at=timezone.now())
    page = ohif_page
    sign_in(page, live_server, neuro_reader)
    # when the reader opens it
    page.goto(f"{live_server.url}/studies/{study.pk}/open/")
    expect(page).to_have_url(re.compile(r"initialSOPInstanceUID=" + re.escape(axial.sop_uids[2])))
    first_image_drawn(page)
    # then OHIF's one viewport shows the flagged series (not the scout, series 1), at the flagged slice
    expect(page.locator('[data-cy="viewport-overlay-top-left"]')).to_contain_text("AXIAL FLAGGED")
    expect(page.locator('[data-cy="viewport-overlay-bottom-right"]')).to_contain_text("I:3 (3/5)")


# --- MPR on the simulator's CT head (issue 19) -----------------------------------------------------

LIT_CANVASES = """(minimum) => {
    // every viewport's canvas, and how many of its pixels are not background
    return [...document.querySelectorAll('.cornerstone-canvas')].map((canvas) => {
        if (!canvas.width) return 0;
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let lit = 0;
        for (let i = 0; i < data.length; i += 4) if (data[i] + data[i + 1] + data[i + 2] > 30) lit++;
        return lit;
    });
}"""


def test_ohif_reconstructs_the_generated_512_ct_head_in_three_mpr_viewports(
    live_server,
    image_storage,
    ohif_page: Page,
    neuro_reader,  # noqa: F811
    chicago,
    ct_head_template,  # noqa: F811
):
    # given a claimed head CT of the simulator's 512² head phantom: real HU, spacing, orientation and
    # positions (12 slices: the fewest that still make a head in the sagittal and coronal planes)
    study = head_ct_study(chicago)
    received(
        chicago,
        ct_series(
            count=12, study_uid=study.study_instance_uid, accession=study.accession_number, size=512,
            phantom="head",
        ),
    )  # fmt: skip
    study_claim(study_id=study.pk, user=neuro_reader, at=timezone.now())
    page = ohif_page
    watch = DicomWebWatch(page)
    sign_in(page, live_server, neuro_reader)
    page.goto(f"{live_server.url}/studies/{study.pk}/open/")
    page.wait_for_function("() => window.crossOriginIsolated === true")
    first_image_drawn(page)
    assert page.locator(".cornerstone-canvas").count() == 1
    # when the reader switches the layout to MPR
    page.locator('[data-cy="Layout"]').click()
    page.get_by_text("MPR", exact=True).click()
    # then three viewports (axial, sagittal, coronal) each draw the head, not a blank canvas
    page.wait_for_function(
        f"() => {{ const lit = ({LIT_CANVASES})(); return lit.length === 3 && lit.every((n) => n > 2000); }}",
        timeout=90_000,
    )
    lit = page.evaluate(LIT_CANVASES)
    assert len(lit) == 3 and min(lit) > 2000, lit
    assert len(set(lit)) == 3, lit  # three planes of the head, not one image drawn three times
    # with every image request answered (no CSP violation either: the ohif_page fixture checks it)
    assert not watch.failures(), watch.failures()


# Colour in the viewport: a CT is drawn in grey (R = G = B); OHIF draws a segmentation in colour.
COLOURED_PIXELS_JS = """() => {
    const canvas = document.querySelector('.cornerstone-canvas');
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let coloured = 0;
    for (let i = 0; i < data.length; i += 4) {
        const hi = Math.max(data[i], data[i + 1], data[i + 2]);
        const lo = Math.min(data[i], data[i + 1], data[i + 2]);
        if (hi - lo > 40) coloured++;
    }
    return coloured;
}"""


def image_shown(page: Page, index: int, count: int) -> None:
    """Scroll the viewport (the wheel, over the image) until it shows image ``index`` of ``count``."""
    box = page.locator(".cornerstone-canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    where = page.locator('[data-cy="viewport-overlay-bottom-right"]')
    for _ in range(2 * count):
        before = where.inner_text()
        shown = re.search(r"\((\d+)/\d+\)", before)
        if shown and int(shown[1]) == index:
            return
        page.mouse.wheel(0, 120 if not shown or int(shown[1]) < index else -120)
        expect(where).not_to_have_text(before)
    raise AssertionError(f"could not scroll to image {index}: {where.inner_text()}")


def test_ohif_overlays_an_ai_segmentation_on_the_images_it_segments(
    live_server,
    image_storage,
    ohif_page: Page,
    neuro_reader,  # noqa: F811
    chicago,
    ct_head_template,  # noqa: F811
):
    from tests.ai_data import ai_seg
    from tests.dicom_data import part10_bytes

    # given a claimed head CT whose AI segmentation (a highdicom SEG, ICH) marks the 3rd of 5 slices
    study = head_ct_study(chicago)
    axial = ct_series(
        count=5, study_uid=study.study_instance_uid, accession=study.accession_number,
        series_number=2, series_description="AXIAL",
    )  # fmt: skip
    received(chicago, axial)
    seg = ai_seg(list(axial.datasets))
    assert dicom_instance_receive(facility=chicago, part10=part10_bytes(seg)).ok
    study_claim(study_id=study.pk, user=neuro_reader, at=timezone.now())
    page = ohif_page  # (its fixture fails the test on any CSP violation the page reports)
    watch = DicomWebWatch(page)
    sign_in(page, live_server, neuro_reader)
    # when the reader opens it
    page.goto(f"{live_server.url}/studies/{study.pk}/open/")
    # then OHIF opens the segmentation's viewport: the CT it segments, the SEG hydrated (no prompt)
    expect(page).to_have_url(re.compile(r"initialSeriesInstanceUID=" + re.escape(seg.SeriesInstanceUID)))
    first_image_drawn(page)
    expect(page.locator('[data-cy="viewport-overlay-top-left"]')).to_contain_text("AXIAL")
    expect(page.get_by_text("Loading SEG")).to_have_count(0, timeout=60_000)
    # and the segmented slice is drawn with the overlay in colour; a slice it does not mark, in grey
    image_shown(page, 3, 5)
    page.wait_for_function(COLOURED_PIXELS_JS.replace("return coloured;", "return coloured > 100;"))
    image_shown(page, 2, 5)  # its neighbour (the overlay's "(2/5)" is set as that image renders)
    assert page.evaluate(COLOURED_PIXELS_JS) == 0
    assert not watch.failures(), watch.failures()
