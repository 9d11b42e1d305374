"""The reading screen's priors line (issue 17, docs/priors.md) in Chromium against the real ASGI
server: a reader holds a head CT in the report editor; a real Orthanc "hospital PACS" holds the
patient's prior head CT with its report (a text SR); the retrieval (a real C-MOVE into ReadRoom's
SCP, run as the Celery task runs it) changes the line from "none asked for yet" to "1 prior
retrieved" on the open page, without a reload, and the prior's report appears beside it — the live
channel's ``study.priors`` event, then the permission-checked fragment. A reader licensed elsewhere
is refused the fragment."""

from __future__ import annotations

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from facilities.models import DicomSender
from imaging.models import PriorState, Study
from interfaces.tasks import priors_fetch_task
from tests.e2e.conftest import sign_in
from tests.e2e.test_worklist import asgi_server, in_worker, readers  # noqa: F401
from tests.interfaces.conftest import (  # noqa: F401
    chicago_interfaces,
    dicom_scp,
    dicom_scp_server,
    image_store,
)
from tests.interfaces.test_priors_orthanc import (  # noqa: F401
    ORTHANC,
    orthanc,
    orthanc_load,
    report_sr_store,
    source,
)
from tests.reports.conftest import ct_head_template, head_ct_study  # noqa: F401
from worklist.services import study_claim

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not __import__("pathlib").Path(ORTHANC).exists(), reason="orthanc not installed"),
]


def test_the_priors_line_changes_live_when_the_retrieval_finishes(
    asgi_server,  # noqa: F811
    page: Page,
    readers,  # noqa: F811
    chicago,
    ct_head_template,  # noqa: F811
    orthanc,  # noqa: F811
    verified_client,
):
    neuro, msk_wi = readers
    # given the neuro reader holding a head CT in the report editor
    held = in_worker(head_ct_study, chicago)
    held.patient.assigning_authority = "LAKESHORE"  # the issuer the PACS's copies carry
    held.patient.save(update_fields=["assigning_authority"])
    in_worker(lambda: study_claim(study_id=held.pk, user=neuro, at=timezone.now()))
    # and the hospital PACS holding the patient's prior head CT, named the facility's prior source
    prior_uid = orthanc_load(
        orthanc, seed=21, mrn=held.patient.mrn, description="CT HEAD WO CONTRAST", study_date="20250601"
    )
    report_sr_store(  # with the hospital's report of it, as a text SR in the same study
        orthanc, mrn=held.patient.mrn, uid=prior_uid, study_date="20250601",
        description="CT HEAD WO CONTRAST", impression="No acute intracranial process.",
    )  # fmt: skip
    DicomSender.objects.create(facility=chicago, ae_title="HOSP_PACS")
    chicago.prior_sources = [source(orthanc, "c-move")]
    chicago.save(update_fields=["prior_sources"])
    sign_in(page, asgi_server, neuro)
    page.goto(f"{asgi_server.url}/studies/{held.pk}/report/")
    expect(page.get_by_test_id("live-channel")).to_have_attribute("data-state", "live")
    line = page.get_by_test_id("prior-status")
    expect(line).to_have_text("Priors from the PACS: none asked for yet")
    page.evaluate("window.__notReloaded = true")

    # when the retrieval runs (the task the study's arrival enqueues), a real C-MOVE from Orthanc
    in_worker(lambda: priors_fetch_task.apply(args=(held.patient_id,), kwargs={"study_id": held.pk}))

    # then the open page says so, without a reload
    expect(line).to_have_text("Priors from the PACS: 1 prior retrieved", timeout=5_000)
    # and the prior's own report from the PACS is beside it
    expect(page.get_by_test_id("prior-document")).to_contain_text(
        "Impression: No acute intracranial process."
    )
    assert page.evaluate("window.__notReloaded") is True
    prior = Study.objects.get(study_instance_uid=prior_uid)
    assert prior.prior_state == PriorState.RETRIEVED and prior.patient_id == held.patient_id

    # and a reader licensed elsewhere is refused the line (and the page)
    other = verified_client(msk_wi)
    assert other.get(f"/studies/{held.pk}/report/priors/").status_code == 404
    own = page.evaluate(f"fetch('/studies/{held.pk}/report/priors/').then((r) => r.status)")
    assert own == 200
