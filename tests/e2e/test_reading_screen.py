"""One reading screen (issue 14, docs/viewer.md): on one wide screen the reader chooses "Side by
side" in the report editor and the study's images show in a pane beside the editor, from the same
checked URLs as "Open images". The choice is remembered; Sign & next keeps the layout and the pane
moves to the next held study; the editor's keyboard path is unchanged. A reader of another facility
gets nothing: the editor and every URL the pane loads are 404."""

from __future__ import annotations

import re

import pytest
from django.utils import timezone
from playwright.sync_api import Frame, Page, expect

from reports.models import Report, ReportStatus
from tests.conftest import enrol_totp
from tests.dicom_data import ct_series
from tests.e2e.conftest import csp_violations_watched, sign_in
from tests.e2e.test_ohif import image_storage, received  # noqa: F401
from tests.e2e.test_worklist import asgi_server, in_worker  # noqa: F401
from tests.reports.conftest import ct_head_template, head_ct_study, next_totp  # noqa: F401
from tests.worklist.conftest import make_eligible, neuro_reader  # noqa: F401
from worklist.services import study_claim

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def head_ct_with_images(facility, slices: int = 3):
    study = head_ct_study(facility)
    received(
        facility,
        ct_series(count=slices, study_uid=study.study_instance_uid, accession=study.accession_number),
    )
    return study


def pane(page: Page) -> Frame:
    frame = page.frame(name="readroom-pane")
    assert frame is not None
    return frame


def pane_shows(page: Page, study) -> None:
    """The pane's viewer is on this study and has drawn its first image."""
    page.wait_for_function(
        """uid => {
            const doc = document.querySelector('[data-testid="reading-pane-frame"]').contentDocument;
            const config = doc && doc.getElementById('viewer-config');
            const image = doc && doc.getElementById('viewer-frame');
            return !!config && JSON.parse(config.textContent).studyUid === uid
                && !!image && image.complete && image.naturalWidth > 0;
        }""",
        arg=study.study_instance_uid,
    )
    expect(page.get_by_test_id("reading-pane")).to_be_visible()


def test_side_by_side_shows_the_images_beside_the_editor_and_sign_and_next_moves_both(
    asgi_server,  # noqa: F811
    page: Page,
    image_storage,  # noqa: F811
    settings,
    tmp_path,
    neuro_reader,  # noqa: F811
    chicago,
    ct_head_template,  # noqa: F811
):
    # given no OHIF here ("Open images" is the built-in viewer), a wide screen, and the reader
    # holding two head CTs with their images
    settings.READROOM_OHIF_DIR = tmp_path / "no-ohif"
    first, second = (in_worker(head_ct_with_images, chicago) for _ in range(2))
    for study in (first, second):
        in_worker(lambda s=study: study_claim(study_id=s.pk, user=neuro_reader, at=timezone.now()))
    page.set_viewport_size({"width": 1600, "height": 900})
    violations = csp_violations_watched(page)  # the pane's frame included
    sign_in(page, asgi_server, neuro_reader)
    page.goto(f"{asgi_server.url}/studies/{first.pk}/report/")
    expect(page.get_by_test_id("reading-pane")).to_be_hidden()

    # when the reader chooses side by side
    page.get_by_test_id("layout-side").click()

    # then the pane beside the editor shows this study's images, the editor is there too
    pane_shows(page, first)
    # the editor and its pane are cross-origin isolated (docs/viewer.md), as OHIF's own page is
    assert page.evaluate("window.crossOriginIsolated") is True
    assert pane(page).evaluate("window.crossOriginIsolated") is True
    expect(page.get_by_test_id("layout-side")).to_have_attribute("aria-pressed", "true")
    expect(pane(page).get_by_test_id("patient-name")).to_have_text(first.patient.display_name)
    images = page.get_by_test_id("reading-pane").bounding_box()
    editor = page.get_by_label("Findings").bounding_box()
    assert images["x"] + images["width"] <= editor["x"], (images, editor)  # beside, not over
    # and the frame carries no second live channel (one banner, one tone per screen)
    expect(pane(page).locator("#live-channel")).to_be_hidden()
    # and the editor's keyboard path is intact: Ctrl+Enter opens the sign dialog, Esc closes it
    page.get_by_label("Findings").click()
    page.keyboard.press("Control+Enter")
    expect(page.locator("#sign-dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#sign-dialog")).to_be_hidden()

    # and the split is theirs: dragging the bar between them (over the frame) widens the images,
    # Home on it gives them the least room; the width is remembered
    splitter = page.get_by_role("separator", name="Width of the images (← →)")
    bar = splitter.bounding_box()
    page.mouse.move(bar["x"] + bar["width"] / 2, bar["y"] + bar["height"] / 2)
    page.mouse.down()
    page.mouse.move(bar["x"] - 150, bar["y"] + bar["height"] / 2, steps=5)  # into the pane's frame
    page.mouse.move(bar["x"] + 160, bar["y"] + bar["height"] / 2, steps=5)
    page.mouse.up()
    expect(splitter).to_have_attribute("aria-valuenow", re.compile(r"^(5[6-9]|6\d)$"))
    assert page.get_by_test_id("reading-pane").bounding_box()["width"] > images["width"]
    splitter.focus()
    page.keyboard.press("Home")
    expect(splitter).to_have_attribute("aria-valuenow", "25")
    assert page.get_by_test_id("reading-pane").bounding_box()["width"] < images["width"]

    # when they complete the report and press Sign final & next
    page.get_by_label("ASPECTS").fill("10")
    page.get_by_label("Impression").fill("No acute intracranial abnormality.")
    page.get_by_test_id("sign-open").click()
    page.get_by_test_id("sign-secret").fill(next_totp(neuro_reader))
    page.get_by_test_id("sign-next").click()

    # then the next held study is in the editor and in the pane: the layout was kept
    expect(page).to_have_url(f"{asgi_server.url}/studies/{second.pk}/report/")
    expect(page.get_by_test_id("report-status")).to_have_text("Draft")
    pane_shows(page, second)
    expect(splitter).to_have_attribute("aria-valuenow", "25")
    assert Report.objects.get(study=first).status == ReportStatus.FINAL
    # and the keyboard is still the editor's: the pane's viewer took no focus as it loaded
    page.keyboard.press("Control+Enter")
    expect(page.locator("#sign-dialog")).to_be_visible()
    page.keyboard.press("Escape")

    # and on a window too narrow for both the pane waits, saying why, and returns when widened
    page.set_viewport_size({"width": 1100, "height": 900})
    expect(page.get_by_test_id("reading-pane")).to_be_hidden()
    expect(page.get_by_test_id("reading-layout-note")).to_contain_text("1200 px")
    pane(page).evaluate("window.stillHere = true")
    page.set_viewport_size({"width": 1600, "height": 900})
    expect(page.get_by_test_id("reading-pane")).to_be_visible()
    expect(page.get_by_test_id("reading-layout-note")).to_have_text("")
    assert pane(page).evaluate("window.stillHere === true")  # the viewer kept its place, not reloaded

    # and switching back to one window without the pane is one click, remembered too
    page.get_by_test_id("layout-side").click()
    expect(page.get_by_test_id("reading-pane")).to_be_hidden()
    page.reload()
    expect(page.get_by_test_id("layout-side")).to_have_attribute("aria-pressed", "false")
    expect(page.get_by_test_id("reading-pane")).to_be_hidden()
    assert violations == [], violations


def test_a_reader_of_another_facility_gets_nothing_in_the_pane(
    asgi_server,  # noqa: F811
    page: Page,
    image_storage,  # noqa: F811
    neuro_reader,  # noqa: F811
    chicago,
    lakeview,
    dr_msk_wi,
    ct_head_template,  # noqa: F811
):
    # given a Lakeshore study held by its reader, and a reader privileged only at Lakeview who
    # reads side by side
    study = in_worker(head_ct_with_images, chicago, 1)
    in_worker(lambda: study_claim(study_id=study.pk, user=neuro_reader, at=timezone.now()))
    in_worker(make_eligible, dr_msk_wi, lakeview)
    in_worker(enrol_totp, dr_msk_wi)  # a signing role: no page without the second factor
    page.set_viewport_size({"width": 1600, "height": 900})
    sign_in(page, asgi_server, dr_msk_wi)
    page.evaluate("localStorage.setItem('readroom.reading.windows', 'side')")
    pane_requests: list[str] = []
    page.on("request", lambda r: pane_requests.append(r.url) if f"/studies/{study.pk}/" in r.url else None)

    # when they open that study's report (a link passed on, a guessed id)
    answer = page.goto(f"{asgi_server.url}/studies/{study.pk}/report/")

    # then it is 404, with no pane and nothing of the study loaded
    assert answer.status == 404, page.url
    expect(page.get_by_test_id("reading-pane")).to_have_count(0)
    expect(page.get_by_text(study.patient.display_name)).to_have_count(0)
    assert pane_requests == [f"{asgi_server.url}/studies/{study.pk}/report/"]
    # and every URL the pane would load is 404 for them too, and never frameable
    for url in (f"/studies/{study.pk}/open/", f"/studies/{study.pk}/viewer/"):
        refused = page.request.get(asgi_server.url + url, max_redirects=0)
        assert refused.status == 404, (url, refused.status)
        assert refused.headers["x-frame-options"] == "DENY"


def test_a_pane_the_server_refuses_says_so_without_phi(
    asgi_server,  # noqa: F811
    page: Page,
    image_storage,  # noqa: F811
    settings,
    tmp_path,
    neuro_reader,  # noqa: F811
    chicago,
    ct_head_template,  # noqa: F811
):
    from datetime import date, timedelta

    from credentialing.models import FacilityPrivilege

    # given the reader in the editor of a head CT they hold, the images pane closed, on a wide screen
    settings.READROOM_OHIF_DIR = tmp_path / "no-ohif"
    study = in_worker(head_ct_with_images, chicago, 1)
    in_worker(lambda: study_claim(study_id=study.pk, user=neuro_reader, at=timezone.now()))
    page.set_viewport_size({"width": 1600, "height": 900})
    sign_in(page, asgi_server, neuro_reader)
    page.goto(f"{asgi_server.url}/studies/{study.pk}/report/")
    expect(page.get_by_test_id("reading-pane")).to_be_hidden()
    # and their privilege at Lakeshore lapses meanwhile: the viewer now refuses them (404, never framed)
    # two days back: "yesterday" by the server's UTC date is still today in Chicago for part of the day
    lapsed = date.today() - timedelta(days=2)
    in_worker(
        lambda: FacilityPrivilege.objects.filter(profile__user=neuro_reader, facility=chicago).update(
            expires_on=lapsed
        )
    )

    # when they choose side by side
    page.get_by_test_id("layout-side").click()

    # then the pane says the server refused the images, instead of staying blank
    refused = page.get_by_test_id("reading-pane-refused")
    expect(refused).to_be_visible()
    expect(refused).to_contain_text("The images cannot be shown here")
    expect(page.get_by_test_id("reading-pane-frame")).to_be_hidden()
    # and the message carries nothing about the patient or the study
    text = refused.inner_text()
    for phi in (study.patient.display_name, study.patient.mrn, study.accession_number):
        assert phi not in text

    # when the basic viewer is chosen instead (also refused), the message stays; when access is
    # back and the default viewer is chosen again, the images show and the message goes
    pane_bar = page.get_by_test_id("reading-pane")
    pane_bar.get_by_role("button", name="Basic viewer").click()
    expect(refused).to_be_visible()
    in_worker(
        lambda: FacilityPrivilege.objects.filter(profile__user=neuro_reader, facility=chicago).update(
            expires_on=date.today() + timedelta(days=365)
        )
    )
    pane_bar.get_by_role("button", name="Default viewer").click()
    pane_shows(page, study)
    expect(refused).to_be_hidden()
