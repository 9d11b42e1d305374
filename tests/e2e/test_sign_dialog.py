"""The sign dialog shows every problem (issue 14): a field out of range (ASPECTS 11) used to be held
back by the browser's own validation, whose bubble cannot show behind the modal dialog — no request,
no word. The form is ``novalidate``: the server's sign check runs and its problems are listed in the
dialog, which reopens with them."""

import pytest
from playwright.sync_api import Page, expect

from reports.models import Report, ReportStatus
from tests.conftest import PASSWORD
from tests.e2e.conftest import sign_in
from tests.reports.conftest import claimed_head_ct, ct_head_template, head_ct_study, next_totp  # noqa: F401
from tests.worklist.conftest import neuro_reader  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_aspects_11_and_missing_fields_are_named_in_the_sign_dialog(
    live_server,
    page: Page,
    neuro_reader,  # noqa: F811
    claimed_head_ct,  # noqa: F811
):
    study = claimed_head_ct
    sign_in(page, live_server, neuro_reader)
    page.goto(f"{live_server.url}/studies/{study.pk}/report/")
    expect(page.get_by_test_id("report-status")).to_have_text("Draft")
    # when the reader enters ASPECTS 11 and signs with a valid code
    page.get_by_label("ASPECTS").fill("11")
    page.get_by_test_id("sign-open").click()
    page.get_by_test_id("sign-secret").fill(next_totp(neuro_reader))
    page.get_by_test_id("sign-final").click()
    # then the dialog is open again and says what is wrong, field by field
    error = page.get_by_test_id("sign-dialog").get_by_test_id("sign-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("ASPECTS")
    expect(error).to_contain_text("10")
    # and nothing was signed
    assert Report.objects.get(study=study).status == ReportStatus.DRAFT


def test_a_critical_result_not_communicated_and_an_ended_shift_are_named_in_the_sign_dialog(
    live_server,
    page: Page,
    neuro_reader,  # noqa: F811
    claimed_head_ct,  # noqa: F811
):
    from django.utils import timezone

    from reports.services import report_critical_mark
    from worklist.models import Shift

    study = claimed_head_ct
    sign_in(page, live_server, neuro_reader)
    page.goto(f"{live_server.url}/studies/{study.pk}/report/")
    expect(page.get_by_test_id("report-status")).to_have_text("Draft")
    # given a report the reader marked critical, with no communication recorded yet
    report = Report.objects.get(study=study)
    report_critical_mark(report_id=report.pk, user=neuro_reader, critical=True, at=timezone.now())
    # when the reader signs final
    page.get_by_test_id("sign-open").click()
    page.get_by_test_id("sign-secret").fill(next_totp(neuro_reader))
    page.get_by_test_id("sign-final").click()
    # then the dialog names the missing communication
    error = page.get_by_test_id("sign-dialog").get_by_test_id("sign-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("Critical result: record who was told")
    assert Report.objects.get(pk=report.pk).status == ReportStatus.DRAFT
    # and when the reader's shift has ended meanwhile, a signature says so in the dialog too
    Shift.objects.filter(radiologist=neuro_reader).update(ends_at=timezone.now())
    page.get_by_test_id("sign-secret").fill(next_totp(neuro_reader))
    page.get_by_test_id("sign-final").click()
    expect(error).to_contain_text("You may not sign for this study now")
    assert Report.objects.get(pk=report.pk).status == ReportStatus.DRAFT


def test_sign_and_next_opens_the_next_held_study_then_the_worklist(
    live_server,
    page: Page,
    neuro_reader,  # noqa: F811
    claimed_head_ct,  # noqa: F811
    chicago,
):
    from django.utils import timezone

    from worklist.services import study_claim

    # given the reader holds a second head CT besides the one they are reading
    first = claimed_head_ct
    second = head_ct_study(chicago)
    study_claim(study_id=second.pk, user=neuro_reader, at=timezone.now())
    sign_in(page, live_server, neuro_reader)
    page.goto(f"{live_server.url}/studies/{first.pk}/report/")
    # when they complete it and press Sign final & next with their code
    page.get_by_label("ASPECTS").fill("10")
    page.get_by_label("Impression").fill("No acute intracranial abnormality.")
    page.get_by_test_id("sign-open").click()
    page.get_by_test_id("sign-secret").fill(next_totp(neuro_reader))
    page.get_by_test_id("sign-next").click()
    # then the first is final and the second is open in the editor
    expect(page).to_have_url(f"{live_server.url}/studies/{second.pk}/report/")
    expect(page.get_by_test_id("report-status")).to_have_text("Draft")
    assert Report.objects.get(study=first).status == ReportStatus.FINAL
    # and signing that one with Sign & next (holding nothing else) lands on the worklist
    page.get_by_label("ASPECTS").fill("9")
    page.get_by_label("Impression").fill("Subtle left insular hypodensity.")
    page.get_by_test_id("sign-open").click()
    page.get_by_test_id("sign-secret").fill(PASSWORD)
    page.get_by_test_id("sign-next").click()
    expect(page).to_have_url(f"{live_server.url}/worklist/")
    expect(page.get_by_role("heading", name="Worklist")).to_be_visible()
    assert Report.objects.get(study=second).status == ReportStatus.FINAL
