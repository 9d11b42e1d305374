"""A radiologist in Chromium claims a study, writes on the facility's template, signs with a fresh
authenticator code, the page shows the final report, and the hospital's EMR (a real MLLP server)
receives the ORU^R01 with OBR-25 F."""

import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import Page, expect

from interfaces.hl7.outbound import outbox_deliver
from reports.models import Report, ReportStatus
from tests.conftest import PASSWORD, current_totp
from tests.interfaces.fake_emr import FakeEmr
from tests.reports.conftest import ct_head_template, head_ct_study, next_totp  # noqa: F401
from tests.worklist.conftest import neuro_reader  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_claim_write_and_sign_with_the_authenticator_code(
    live_server,
    page: Page,
    neuro_reader,  # noqa: F811 (the fixture imported above)
    chicago,
    ct_head_template,  # noqa: F811
):
    # given Lakeshore's EMR listening for results, an unclaimed head CT there, and dr_neuro_il signed
    # in with both factors
    emr = FakeEmr(lambda control_id, seen: "AA").start()
    chicago.hl7_outbound_host, chicago.hl7_outbound_port = "127.0.0.1", emr.port
    chicago.save()
    study = head_ct_study(chicago)
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill(neuro_reader.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    device = TOTPDevice.objects.get(user=neuro_reader)
    page.get_by_label("Code from your authenticator app").fill(current_totp(device))
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_test_id("current-user")).to_have_text(str(neuro_reader))

    # when they claim it (the worklist's claim API) and open the editor
    status = page.evaluate(
        """async (url) => {
            const token = JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRFToken"];
            const response = await fetch(url, {method: "POST", headers: {"X-CSRFToken": token}});
            return response.status;
        }""",
        f"/api/v1/worklist/{study.pk}/claim/",
    )
    assert status == 200
    page.goto(f"{live_server.url}/studies/{study.pk}/report/")
    expect(page.get_by_test_id("report-status")).to_have_text("Draft")
    expect(page.get_by_label("History")).to_have_value("67-year-old female. Sudden left-sided weakness.")

    # they write on the template; the draft autosaves
    page.get_by_label("ASPECTS").fill("10")
    page.get_by_label("Impression").click()
    page.keyboard.type("No acute intracranial abnormality. ")
    page.keyboard.press("Alt+m")
    expect(page.get_by_role("heading", name="Insert a macro")).to_be_visible()
    page.get_by_label("Macro", exact=True).select_option(label="Clinical correlation")
    page.get_by_role("button", name="Insert", exact=True).click()
    expect(page.get_by_label("Impression")).to_have_value(
        "No acute intracranial abnormality. Correlation with clinical findings is recommended."
    )
    expect(page.get_by_test_id("autosave-saved")).to_be_visible(timeout=10_000)

    # Ctrl+Enter opens the sign dialog; they sign with the next authenticator code
    page.keyboard.press("Control+Enter")
    expect(page.get_by_test_id("sign-dialog")).to_be_visible()
    page.get_by_label("Password or authenticator code").fill(next_totp(neuro_reader))
    page.get_by_test_id("sign-final").click()

    # then the page shows the final report with the signed text
    expect(page.get_by_test_id("report-status")).to_have_text("Final")
    expect(page.get_by_test_id("signed-text")).to_contain_text(
        "Correlation with clinical findings is recommended."
    )
    expect(page.get_by_role("heading", name="Add addendum")).to_be_visible()
    report = Report.objects.get(study=study)
    assert report.status == ReportStatus.FINAL and report.signed_by_id == neuro_reader.pk

    # and the EMR has the final result (delivered on commit; the sweep's call finds nothing left)
    outbox_deliver(facility_id=chicago.pk)
    emr.stop()
    assert len(emr.messages) == 1
    obr = next(line for line in emr.messages[0].split("\r") if line.startswith("OBR|"))
    assert obr.split("|")[25] == "F" and study.accession_number in obr
    assert "Correlation with clinical findings is recommended." in emr.messages[0]
