"""The live channel end to end through the real edges (issue 14): a code stroke sent as a hospital
sends it — the ORM^O01 over a real MLLP socket to the HL7 listener (stored by its inbox thread and
applied after the ACK, as the embedded server does), the CT by dcmtk's storescu to the
Storage SCP — while the reader is on the report editor, the built-in viewer or OHIF's page: the
banner is on that page within a second and the stroke is claimed from it; a reader licensed
elsewhere, signed in at the same time, sees nothing.

Two orders of arrival, as the hospitals send them: the order first (the SCP routes the stroke at its
first image), and the images first (they wait unrouted; the stroke order makes them a code stroke)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from imaging.models import Study
from tests import hl7_data
from tests.e2e import test_ohif
from tests.e2e.conftest import sign_in
from tests.e2e.test_worklist import asgi_server, in_worker, readers  # noqa: F401
from tests.interfaces.conftest import (  # noqa: F401  (the real MLLP listener and Storage SCP)
    _inbox_connection_reset,
    chicago_interfaces,
    dicom_scp,
    dicom_scp_server,
    hl7_listener,
    image_store,
)
from tests.interfaces.test_dicom_scp import dcmtk, write_series
from tests.interfaces.test_hl7_listener import exchange, msa
from tests.reports.conftest import ct_head_template, head_ct_study  # noqa: F401
from tests.worklist.conftest import neuro_reader  # noqa: F401
from worklist.models import StudyAssignment
from worklist.services import study_claim

claimed_ct, image_storage, ohif_page = test_ohif.claimed_ct, test_ohif.image_storage, test_ohif.ohif_page
ohif_browser, ohif_context, ohif_installed = (
    test_ohif.ohif_browser,
    test_ohif.ohif_context,
    test_ohif.ohif_installed,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed (apt-get dcmtk)"),
    # the inbox-thread listener: with eager Celery (tests) the inline one would apply the order, and
    # broadcast, in its event loop's thread; deployed, `manage.py hl7_listener` hands it to a worker
    pytest.mark.parametrize("hl7_listener", ["inbox-thread"], indirect=True),
]


def stroke_order_send(listener, exam) -> None:
    """The stroke ORM^O01 for ``exam``'s accession over MLLP, answered AA (the listener applies it
    after the ACK; ``exchange`` returns once it is applied)."""
    frame = hl7_data.orm(
        accession=exam.accession,
        placer=f"P{exam.accession}",
        filler=f"F{exam.accession}",
        mrn=exam.mrn,
        priority="S",
        reason="CODE STROKE",
    )
    [ack] = in_worker(exchange, listener, frame)
    assert msa(ack)[0] == "AA", str(ack)


def images_store(scp, paths: list[Path]) -> None:
    """dcmtk's storescu as the modality (by PATH: not pynetdicom's same-named script)."""
    host, port, aet = scp
    result = dcmtk("storescu", "-aet", "LAKESHORE_CT1", "-aec", aet, host, str(port), *map(str, paths))
    assert result.returncode == 0, result.stderr


def channel_live(page: Page) -> None:
    expect(page.get_by_test_id("live-channel")).to_have_attribute("data-state", "live")


def claim_from_the_banner(page: Page, study: Study, reader) -> None:
    alert = page.locator(f'[data-testid="live-alert"][data-study-id="{study.pk}"]')
    expect(alert).to_contain_text("CODE STROKE")
    expect(alert).to_contain_text("Lakeshore Medical Center")
    expect(alert).to_have_attribute("data-sounding", "true")
    alert.get_by_role("button", name="Claim").click()
    expect(alert.locator(".status")).to_have_text("Yours")
    assert StudyAssignment.objects.get(study=study).claimed_by_id == reader.pk


def test_order_then_images_reach_the_reader_in_the_report_editor_and_not_the_reader_licensed_elsewhere(
    asgi_server,  # noqa: F811
    browser: Browser,
    page: Page,
    readers,  # noqa: F811
    chicago_interfaces,  # noqa: F811
    hl7_listener,  # noqa: F811
    dicom_scp,  # noqa: F811
    ct_head_template,  # noqa: F811
    tmp_path,
):
    neuro, msk_wi = readers
    chicago = chicago_interfaces
    # given the neuro reader in the report editor of a head CT they hold
    held = in_worker(head_ct_study, chicago)
    in_worker(lambda: study_claim(study_id=held.pk, user=neuro, at=timezone.now()))
    sign_in(page, asgi_server, neuro)
    page.goto(f"{asgi_server.url}/studies/{held.pk}/report/")
    expect(page.get_by_test_id("report-status")).to_have_text("Draft")
    channel_live(page)
    page.get_by_label("History").click()  # a gesture: the tone may play
    # and the WI-only reader signed in on another page
    wi_context = browser.new_context()
    wi_page = wi_context.new_page()
    sign_in(wi_page, asgi_server, msk_wi)
    wi_page.goto(f"{asgi_server.url}/account/security/")
    channel_live(wi_page)

    # when Lakeshore's RIS sends the stroke order over MLLP, then the CT sends the images
    exam, paths = write_series(tmp_path, slices=4, accession="STK-E2E-1", seed=14)
    stroke_order_send(hl7_listener, exam)
    expect(page.get_by_test_id("live-alert")).to_have_count(0)  # an order with no images is not read yet
    images_store(dicom_scp, paths)

    # then the editor shows the banner within a second of the images (routed at the first one)
    study = Study.objects.get(study_instance_uid=exam.study_uid)
    assert study.is_stroke and study.order.accession_number == "STK-E2E-1"
    banner = page.locator(f'[data-testid="live-alert"][data-study-id="{study.pk}"]')
    expect(banner).to_be_visible(timeout=1_000)
    expect(page.get_by_test_id("report-status")).to_have_text("Draft")  # the draft is untouched
    # and the reader claims it from the banner
    claim_from_the_banner(page, study, neuro)
    # the reader licensed only in WI never heard of it
    expect(wi_page.get_by_test_id("live-alert")).to_have_count(0)
    wi_context.close()


def test_images_then_order_reach_the_reader_in_the_viewer_within_a_second_of_the_ack(
    asgi_server,  # noqa: F811
    page: Page,
    readers,  # noqa: F811
    chicago_interfaces,  # noqa: F811
    hl7_listener,  # noqa: F811
    dicom_scp,  # noqa: F811
    tmp_path,
):
    neuro, _ = readers
    chicago = chicago_interfaces
    # given the reader in the built-in viewer of a study they hold
    held = in_worker(head_ct_study, chicago)
    in_worker(lambda: study_claim(study_id=held.pk, user=neuro, at=timezone.now()))
    sign_in(page, asgi_server, neuro)
    page.goto(f"{asgi_server.url}/studies/{held.pk}/viewer/")
    channel_live(page)
    # when a head CT whose images say nothing of a stroke arrives first
    exam, paths = write_series(tmp_path, slices=4, accession="STK-E2E-2", seed=15)
    images_store(dicom_scp, paths)
    page.wait_for_timeout(300)
    expect(page.get_by_test_id("live-alert")).to_have_count(0)
    # and then its stroke order over MLLP (``exchange`` returns once the listener has applied it)
    stroke_order_send(hl7_listener, exam)
    # then the viewer shows the banner within a second of the order applied, and the reader claims it
    study = Study.objects.get(study_instance_uid=exam.study_uid)
    expect(page.locator(f'[data-testid="live-alert"][data-study-id="{study.pk}"]')).to_be_visible(
        timeout=1_000
    )
    claim_from_the_banner(page, study, neuro)


def test_a_stroke_through_the_listener_and_the_scp_reaches_a_reader_in_ohif(
    asgi_server,  # noqa: F811
    claimed_ct,
    ohif_page: Page,
    neuro_reader,  # noqa: F811
    chicago_interfaces,  # noqa: F811
    hl7_listener,  # noqa: F811
    dicom_scp,  # noqa: F811
    tmp_path,
):
    page = ohif_page
    # given the reader in OHIF on a study they hold
    sign_in(page, asgi_server, neuro_reader)
    page.goto(f"{asgi_server.url}/ohif/viewer?StudyInstanceUIDs={claimed_ct.study_instance_uid}")
    page.wait_for_function("() => window.crossOriginIsolated === true")
    channel_live(page)
    # when the stroke order comes over MLLP and then the images by C-STORE
    exam, paths = write_series(tmp_path, slices=3, accession="STK-E2E-3", seed=16)
    stroke_order_send(hl7_listener, exam)
    images_store(dicom_scp, paths)
    # then OHIF's page shows the banner over the viewer, and the reader claims from it
    study = Study.objects.get(study_instance_uid=exam.study_uid)
    expect(page.locator(f'[data-testid="live-alert"][data-study-id="{study.pk}"]')).to_be_visible(
        timeout=1_000
    )
    claim_from_the_banner(page, study, neuro_reader)
