"""The report pages and the REST API: the claimant edits, eligible readers read signed reports, others
are refused; autosave; sign through the page with a TOTP code; the PDF; PHI reads audited."""

from __future__ import annotations

import io

import pytest
from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone
from pypdf import PdfReader

from reports.models import Report, ReportStatus
from reports.services import addendum_sign, report_draft_save, report_sign, report_start
from tests.conftest import PASSWORD, enrol_totp
from tests.reports.conftest import FILLED, head_ct_study, next_totp
from tests.worklist.conftest import make_eligible

pytestmark = pytest.mark.django_db


@pytest.fixture
def final_report(claimed_head_ct, neuro_reader) -> Report:
    report = report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now())
    report_draft_save(report_id=report.pk, user=neuro_reader, values=FILLED, at=timezone.now())
    return report_sign(report_id=report.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=True)


def _form_values(**values) -> dict:
    return {f"value-{k}": v for k, v in values.items()}


def test_the_claimant_opens_the_editor_autosaves_and_signs_with_a_totp_code(
    claimed_head_ct, neuro_reader, verified_client
):
    client = verified_client(neuro_reader)
    url = f"/studies/{claimed_head_ct.pk}/report/"
    # when the claimant opens the editor: dark, labelled fields, required marks, the viewer link
    page = client.get(url)
    html = page.content.decode()
    assert page.status_code == 200 and 'data-theme="dark"' in html
    assert '<label for="value-impression">Impression <span class="required"' in html
    assert f'href="/studies/{claimed_head_ct.pk}/viewer/"' in html and "67-year-old female" in html
    # autosave keeps a draft and says so; a value of the wrong kind is refused with the reason
    saved = client.post(url + "autosave/", _form_values(aspects="9", findings="Hypodensity."))
    assert saved.status_code == 200 and "Draft saved" in saved.content.decode()
    refused = client.post(url + "autosave/", _form_values(aspects="eleven"))
    assert refused.status_code == 400 and "ASPECTS: a number" in refused.content.decode()
    # signing with a missing impression shows what to fix, with the dialog open
    missing = client.post(url + "sign/", {**_form_values(impression=""), "secret": PASSWORD, "kind": "final"})
    assert missing.status_code == 400 and "Impression: required to sign" in missing.content.decode()
    # signing with the TOTP code and the impression filled makes it final and shows the signed text
    done = client.post(
        url + "sign/",
        {
            **_form_values(impression="Early left MCA infarct."),
            "secret": next_totp(neuro_reader),
            "kind": "final",
        },
    )
    assert done.status_code == 302
    report = Report.objects.get(study=claimed_head_ct)
    assert report.status == ReportStatus.FINAL and "Early left MCA infarct." in report.signed_text
    shown = client.get(url).content.decode()
    assert 'data-testid="signed-report"' in shown and "Add addendum" in shown and "Sign…" not in shown


def test_the_editor_refuses_a_reader_who_does_not_hold_the_study(
    claimed_head_ct, other_neuro_reader, verified_client
):
    client = verified_client(other_neuro_reader)
    # an eligible colleague sees no draft of another reader's study
    assert client.get(f"/studies/{claimed_head_ct.pk}/report/").status_code == 404
    assert client.post(f"/studies/{claimed_head_ct.pk}/report/autosave/", {}).status_code == 404


def test_a_signed_report_is_readable_by_eligible_readers_and_the_facility_not_others(
    final_report,
    claimed_head_ct,
    other_neuro_reader,
    dr_msk_wi,
    lakeview,
    mso_mary,
    admin_chicago,
    admin_lakeview,
    client,
    verified_client,
):
    url = f"/api/v1/reports/{final_report.pk}/"
    # an eligible colleague at the facility reads it, and the read is audited
    colleague = verified_client(other_neuro_reader)
    body = colleague.get(url).json()
    assert body["status"] == "final" and body["signed_text"] == final_report.signed_text
    report_type = ContentType.objects.get_for_model(Report)
    assert LogEntry.objects.filter(
        content_type=report_type,
        object_id=final_report.pk,
        action=LogEntry.Action.ACCESS,
        actor=other_neuro_reader,
    ).exists()
    # but cannot change it
    assert (
        colleague.patch(url, {"values": {"findings": "x"}}, content_type="application/json").status_code
        == 409
    )
    # Chicago's admin reads it (the hospital's system), filtered by accession
    client.force_login(admin_chicago)
    listed = client.get(f"/api/v1/reports/?accession={claimed_head_ct.accession_number}").json()
    assert [r["id"] for r in listed["results"]] == [final_report.pk]
    # a radiologist eligible at Lakeview (WI) only, the MSO and Lakeview's admin: 404 everywhere
    make_eligible(dr_msk_wi, lakeview)
    enrol_totp(dr_msk_wi)
    for user in (dr_msk_wi, mso_mary, admin_lakeview):
        outsider = verified_client(user) if user is dr_msk_wi else client
        if user is not dr_msk_wi:
            outsider.force_login(user)
        assert outsider.get(url).status_code == 404, user
        assert (
            outsider.get(f"/api/v1/reports/?accession={claimed_head_ct.accession_number}").json()["results"]
            == []
        )
        assert outsider.get(f"/studies/{claimed_head_ct.pk}/report.pdf").status_code == 404
        assert outsider.get(f"/studies/{claimed_head_ct.pk}/report/").status_code == 404


def test_the_api_patches_draft_values_and_signs(
    claimed_head_ct, neuro_reader, other_neuro_reader, verified_client
):
    report = report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now())
    client = verified_client(neuro_reader)
    url = f"/api/v1/reports/{report.pk}/"
    patched = client.patch(url, {"values": FILLED}, content_type="application/json")
    assert patched.status_code == 200 and patched.json()["values"]["impression"] == FILLED["impression"]
    bad = client.patch(url, {"values": {"aspects": "12"}}, content_type="application/json")
    assert bad.status_code == 400 and bad.json()["problems"] == ["ASPECTS: between 0 and 10"]
    wrong = client.post(url + "sign/", {"secret": "not-it"}, content_type="application/json")
    assert wrong.status_code == 400 and "not accepted" in wrong.json()["detail"]
    signed = client.post(url + "sign/", {"secret": PASSWORD, "final": True}, content_type="application/json")
    assert signed.status_code == 200 and signed.json()["status"] == "final"
    added = client.post(
        url + "addenda/", {"text": "Correction.", "secret": PASSWORD}, content_type="application/json"
    )
    assert added.status_code == 201 and added.json()["sequence"] == 1
    assert client.get(url).json()["addenda"][0]["text"] == "Correction."


def test_the_api_refuses_signing_by_a_non_claimant(
    claimed_head_ct, neuro_reader, other_neuro_reader, verified_client, chicago
):
    chicago.accepts_preliminary = True
    chicago.save()
    report = report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now())
    report_draft_save(report_id=report.pk, user=neuro_reader, values=FILLED, at=timezone.now())
    report_sign(report_id=report.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=False)
    # the preliminary read is visible to a colleague, who may not sign it
    response = verified_client(other_neuro_reader).post(
        f"/api/v1/reports/{report.pk}/sign/", {"secret": PASSWORD}, content_type="application/json"
    )
    assert response.status_code == 403 and "claimed" in response.json()["detail"]


def test_the_pdf_has_letterhead_patient_text_signature_and_addenda(
    final_report, neuro_reader, verified_client
):
    addendum_sign(
        report_id=final_report.pk,
        user=neuro_reader,
        text="Dot sign noted.",
        secret=PASSWORD,
        at=timezone.now(),
    )
    response = verified_client(neuro_reader).get(f"/studies/{final_report.study_id}/report.pdf")
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)
    for expected in (
        "Lakeshore Medical Center",
        "RIVERA, Ana",
        final_report.study.accession_number,
        "No acute intracranial abnormality.",
        "Electronically signed by",
        "Addendum 1",
        "Dot sign noted.",
    ):
        assert expected in text, expected


def test_no_pdf_for_a_draft(claimed_head_ct, neuro_reader, verified_client):
    report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now())
    assert verified_client(neuro_reader).get(f"/studies/{claimed_head_ct.pk}/report.pdf").status_code == 404


def test_a_study_without_a_template_says_why(neuro_reader, chicago, verified_client):
    from reports.models import ReportTemplate
    from worklist.services import study_claim

    ReportTemplate.objects.all().update(is_active=False)  # not even the shipped CT head template
    study = head_ct_study(chicago)

    study_claim(study_id=study.pk, user=neuro_reader, at=timezone.now())
    response = verified_client(neuro_reader).get(f"/studies/{study.pk}/report/")
    assert response.status_code == 400 and "no report template" in response.content.decode()


def test_an_older_autosave_landing_while_signing_does_not_change_what_is_signed(
    claimed_head_ct, neuro_reader, verified_client, monkeypatch
):
    # given a reader whose editor shows the macro's sentence, and an autosave sent before it (the
    # text without it) that reaches the server while the signature is being checked — the race a
    # loaded CI machine met: the older text was signed, not what was on the screen
    from reports import services

    client = verified_client(neuro_reader)
    url = f"/studies/{claimed_head_ct.pk}/report/"
    assert client.get(url).status_code == 200
    older = {**FILLED, "impression": "No acute intracranial abnormality."}
    on_screen = {**FILLED, "impression": "No acute intracranial abnormality. Correlation is recommended."}
    reauthenticate = services.signing_reauthenticate

    def autosave_lands_meanwhile(**kwargs):
        result = reauthenticate(**kwargs)
        report = Report.objects.get(study=claimed_head_ct)
        services.report_draft_save(report_id=report.pk, user=neuro_reader, values=older, at=timezone.now())
        return result

    monkeypatch.setattr(services, "signing_reauthenticate", autosave_lands_meanwhile)
    # when they sign
    done = client.post(url + "sign/", {**_form_values(**on_screen), "secret": PASSWORD, "kind": "final"})
    # then what was on the screen is what is signed
    assert done.status_code == 302
    report = Report.objects.get(study=claimed_head_ct)
    assert report.status == ReportStatus.FINAL
    assert "Correlation is recommended." in report.signed_text
    assert report.values["impression"] == on_screen["impression"]
    # and an autosave arriving after the signature changes nothing
    late = client.post(url + "autosave/", _form_values(**older))
    assert late.status_code == 409
    report.refresh_from_db()
    assert report.values["impression"] == on_screen["impression"]
