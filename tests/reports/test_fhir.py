"""GET /fhir/r4/DiagnosticReport/<id>: a signed report as a valid R4 resource (final, then amended
after an addendum) for those who may see the study; 404 for a draft and for anyone else."""

from __future__ import annotations

import base64

import pytest
from django.test import Client
from django.utils import timezone

from reports.services import addendum_sign, report_draft_save, report_sign, report_start
from tests.conftest import PASSWORD
from tests.reports.conftest import FILLED

pytestmark = pytest.mark.django_db


@pytest.fixture
def report(claimed_head_ct, neuro_reader):
    report = report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now())
    report_draft_save(report_id=report.pk, user=neuro_reader, values=FILLED, at=timezone.now())
    return report


def test_signed_report_as_diagnostic_report_then_amended(report, neuro_reader, ops_omar, client):
    url = f"/fhir/r4/DiagnosticReport/{report.pk}"
    client.force_login(ops_omar)
    # a draft is not a DiagnosticReport yet
    assert client.get(url).status_code == 404
    report_sign(report_id=report.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=True)
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"].startswith("application/fhir+json")
    resource = response.json()
    assert resource["resourceType"] == "DiagnosticReport" and resource["status"] == "final"
    assert resource["conclusion"] == FILLED["impression"]
    assert resource["imagingStudy"] == [{"reference": f"ImagingStudy/{report.study_id}"}]
    forms = {f["contentType"].split(";")[0]: f for f in resource["presentedForm"]}
    assert base64.b64decode(forms["application/pdf"]["data"]).startswith(b"%PDF")
    assert FILLED["findings"] in base64.b64decode(forms["text/plain"]["data"]).decode()
    # after an addendum the report is amended and the addendum is in the text
    addendum_sign(
        report_id=report.pk, user=neuro_reader, text="Tiny left SDH.", secret=PASSWORD, at=timezone.now()
    )
    resource = client.get(url).json()
    assert resource["status"] == "amended"
    text = base64.b64decode(
        next(f for f in resource["presentedForm"] if "text/plain" in f["contentType"])["data"]
    )
    assert b"Tiny left SDH." in text


def test_others_get_404_mso_403_and_anonymous_401(report, neuro_reader, dr_msk_wi, mso_mary, verified_client):
    from tests.conftest import enrol_totp

    report_sign(report_id=report.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=True)
    url = f"/fhir/r4/DiagnosticReport/{report.pk}"
    assert Client().get(url).status_code == 401
    mso = Client()
    mso.force_login(mso_mary)
    assert mso.get(url).status_code == 403  # credentialing staff never see patient data
    enrol_totp(dr_msk_wi)
    response = verified_client(dr_msk_wi).get(url)  # licensed only in WI: the IL study does not exist
    assert response.status_code == 404 and "No acute" not in response.content.decode()
