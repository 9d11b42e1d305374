"""FHIR R4 ImagingStudy over HTTP (who may read it, audit) and the resource builders, each checked
by constructing fhir.resources' R4B models (the R4 technical correction; docs/delivery.md)."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime

import pytest
from auditlog.models import LogEntry
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.imagingstudy import ImagingStudy

from accounts.tokens import api_token_issue
from imaging.models import Series, StudyStatus
from interfaces.fhir.resources import (
    DiagnosticReportSnapshot,
    ReportAuthor,
    diagnostic_report_resource,
    imaging_study_resource,
    ordering_provider_reference,
    reason_code,
)
from tests.conftest import enrol_totp
from tests.worklist.conftest import make_eligible, make_study

pytestmark = pytest.mark.django_db


@pytest.fixture
def head_ct(chicago):
    study = make_study(chicago, code="70450", text="CT HEAD WO CONTRAST", description="CT HEAD")
    order, patient = study.order, study.patient
    order.placer_order_number, order.procedure_coding_system = "PL-77", "C4"
    order.ordering_provider_name, order.reason = "Dr James Kildare", "left facial droop"
    order.save()
    patient.family_name, patient.given_name, patient.birth_date = "Quinlan", "Jane", date(1951, 6, 30)
    patient.save()
    study.status, study.study_datetime = StudyStatus.COMPLETE, datetime(2025, 3, 1, 9, 2, tzinfo=UTC)
    study.number_of_series, study.number_of_instances = 2, 40
    study.save()
    Series.objects.create(
        study=study, series_instance_uid=f"{study.study_instance_uid}.1", series_number=1, modality="CT",
        description="AXIAL 5mm", number_of_instances=30,
    )  # fmt: skip
    Series.objects.create(
        study=study, series_instance_uid=f"{study.study_instance_uid}.2", series_number=2, modality="CT",
        number_of_instances=10,
    )  # fmt: skip
    return study


def test_imaging_study_is_valid_r4_with_uids_accession_and_series(head_ct):
    resource = imaging_study_resource(head_ct)
    ImagingStudy.model_validate(resource)  # round trip through the model
    assert resource["status"] == "available"
    assert {"system": "urn:dicom:uid", "value": f"urn:oid:{head_ct.study_instance_uid}"} in resource[
        "identifier"
    ]
    (accession,) = [i for i in resource["identifier"] if "type" in i]
    assert accession["type"]["coding"][0]["code"] == "ACSN"
    assert accession["value"] == head_ct.accession_number
    assert resource["subject"]["identifier"]["value"] == head_ct.patient.mrn
    assert resource["subject"]["display"] == "QUINLAN, Jane"
    assert resource["procedureCode"][0]["coding"][0] == {
        "system": "http://www.ama-assn.org/go/cpt",
        "code": "70450",
        "display": "CT HEAD WO CONTRAST",
    }
    assert resource["basedOn"][0]["identifier"]["value"] == "PL-77"
    assert [s["number"] for s in resource["series"]] == [1, 2]
    assert resource["series"][0]["modality"]["code"] == "CT" and resource["numberOfInstances"] == 40
    assert resource["started"].startswith("2025-03-01T09:02:00")


def test_a_study_still_waiting_for_images_is_registered_and_may_lack_a_patient(chicago):
    bare = make_study(chicago)
    resource = imaging_study_resource(bare)
    assert resource["status"] == "registered" and "display" in resource["subject"]
    assert "series" not in resource and "procedureCode" not in resource


def snapshot(study, **changes) -> DiagnosticReportSnapshot:
    values = dict(
        id="42",
        status="final",
        study=study,
        effective_at=datetime(2025, 3, 1, 9, 2, tzinfo=UTC),
        issued=datetime(2025, 3, 1, 9, 29, 30, tzinfo=UTC),
        performer=ReportAuthor("Nadia Neuro, MD", npi="1649251780"),
        conclusion="No hemorrhage. Early left MCA infarct, ASPECTS 9.",
        text="FINDINGS:\nNo hemorrhage.\n\nIMPRESSION:\nNo hemorrhage. Early left MCA infarct, ASPECTS 9.",
        title="CT HEAD WO CONTRAST — final report",
    )
    return DiagnosticReportSnapshot(**{**values, **changes})


@pytest.mark.parametrize("status", ["preliminary", "final", "amended"])
def test_diagnostic_report_is_valid_r4(head_ct, status):
    # given a report of the head CT, with its signed PDF
    pdf = b"%PDF-1.7 signed report"
    resource = diagnostic_report_resource(snapshot(head_ct, status=status, pdf=pdf))
    # then it validates as an R4 DiagnosticReport with what the issue asks for
    DiagnosticReport.model_validate(resource)
    assert resource["status"] == status
    assert resource["code"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "18748-4",
        "display": "Diagnostic imaging study",
    }
    assert resource["conclusion"].startswith("No hemorrhage")
    assert resource["imagingStudy"] == [{"reference": f"ImagingStudy/{head_ct.pk}"}]
    assert resource["performer"][0] == {
        "display": "Nadia Neuro, MD",
        "identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1649251780"},
    }
    text, attached_pdf = resource["presentedForm"]
    assert text["contentType"].startswith("text/plain") and text["title"].endswith("final report")
    assert base64.b64decode(text["data"]).decode().startswith("FINDINGS:\nNo hemorrhage.")
    assert attached_pdf["contentType"] == "application/pdf" and base64.b64decode(attached_pdf["data"]) == pdf
    assert resource["category"][0]["coding"][0]["code"] == "RAD"


def test_diagnostic_report_refuses_a_status_it_should_never_send(head_ct):
    with pytest.raises(ValueError, match="registered"):
        diagnostic_report_resource(snapshot(head_ct, status="registered"))


# --- GET /fhir/r4/ImagingStudy/<id> -------------------------------------------------------------


def test_an_eligible_reader_reads_it_and_the_read_is_audited(head_ct, dr_neuro_il, chicago, verified_client):
    # given a neuroradiologist eligible at Lakeshore now
    make_eligible(dr_neuro_il, chicago)
    client = verified_client(dr_neuro_il)
    # when they fetch the study as FHIR
    response = client.get(f"/fhir/r4/ImagingStudy/{head_ct.pk}")
    # then it is FHIR JSON, not cached, and the PHI access is recorded with who read it
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/fhir+json")
    assert response["Cache-Control"] == "no-store, private"
    assert response.json()["id"] == str(head_ct.pk)
    read = LogEntry.objects.get_for_object(head_ct).filter(action=LogEntry.Action.ACCESS).get()
    assert read.actor == dr_neuro_il


def test_a_reader_licensed_only_elsewhere_gets_404(head_ct, dr_msk_wi, lakeview, verified_client):
    # given a reader eligible only in Wisconsin
    enrol_totp(dr_msk_wi)
    make_eligible(dr_msk_wi, lakeview)
    client = verified_client(dr_msk_wi)
    # when they ask for the Illinois study
    response = client.get(f"/fhir/r4/ImagingStudy/{head_ct.pk}")
    # then it does not exist for them, and nothing was read
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"
    assert not LogEntry.objects.filter(action=LogEntry.Action.ACCESS).exists()


def test_anonymous_gets_401_and_mso_gets_403(client, head_ct, mso_mary):
    response = client.get(f"/fhir/r4/ImagingStudy/{head_ct.pk}")
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"
    assert response.json()["issue"][0]["code"] == "login"
    client.force_login(mso_mary)  # credentialing staff never see patient data: refused by role
    response = client.get(f"/fhir/r4/ImagingStudy/{head_ct.pk}")
    assert response.status_code == 403 and response.json()["issue"][0]["code"] == "forbidden"


def test_a_hospital_system_reads_it_with_a_token(client, head_ct, ops_omar):
    token = api_token_issue(user=ops_omar).key
    response = client.get(f"/fhir/r4/ImagingStudy/{head_ct.pk}", HTTP_AUTHORIZATION=f"Token {token}")
    assert response.status_code == 200
    read = LogEntry.objects.get_for_object(head_ct).filter(action=LogEntry.Action.ACCESS).get()
    assert read.actor == ops_omar


# --- pieces of the ServiceRequest mapping the orders' fields feed --------------------------------


@pytest.mark.parametrize("system", ["I10", "i10", "I10C", "ICD10", "ICD-10", "ICD-10-CM", "ICD10CM"])
def test_an_icd10_reason_for_study_gets_the_icd10cm_system(system):
    # given OBR-31 as a RIS sends it: code ^ text ^ coding system (HL7 table 0396 names and variants)
    concept = reason_code(code="I63.9", text="Cerebral infarction, unspecified", system=system)
    # then the CodeableConcept names ICD-10-CM, and validates
    assert concept == {
        "coding": [
            {
                "code": "I63.9",
                "display": "Cerebral infarction, unspecified",
                "system": "http://hl7.org/fhir/sid/icd-10-cm",
            }
        ],
        "text": "Cerebral infarction, unspecified",
    }
    CodeableConcept.model_validate(concept)


def test_a_reason_without_a_known_system_keeps_its_code_and_text():
    assert reason_code(code="R51", text="HEADACHE", system="LOCAL99") == {
        "coding": [{"code": "R51", "display": "HEADACHE"}],
        "text": "HEADACHE",
    }
    assert reason_code(text="CODE STROKE") == {"text": "CODE STROKE"}
    assert reason_code(code="R51", text="") == {"coding": [{"code": "R51"}], "text": "R51"}


@pytest.mark.parametrize(
    ("authority", "npi"),
    [("NPI", True), ("npi", True), ("2.16.840.1.113883.4.6", True), ("", False), ("LAKESHORE", False)],
)
def test_the_ordering_provider_is_an_npi_only_when_xcn9_says_so(head_ct, authority, npi):
    order = head_ct.order
    order.ordering_provider_id, order.ordering_provider_name = "1234567893", "DR MARCUS WELBY"
    order.ordering_provider_xcn = {"id": "1234567893", "family": "WELBY", "authority": authority}
    reference = ordering_provider_reference(order)
    assert reference["display"] == "DR MARCUS WELBY"
    assert (reference["identifier"].get("system") == "http://hl7.org/fhir/sid/us-npi") is npi
    assert reference["identifier"]["value"] == "1234567893"
