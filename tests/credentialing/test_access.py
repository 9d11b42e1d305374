"""Who sees and changes what: the MSO never sees patient data; a facility admin sees only their own
facility's readers; a radiologist reads their own dossier and uploads, but edits nothing."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
import time_machine
from django.core.files.uploadedfile import SimpleUploadedFile

from credentialing import services
from credentialing.models import Document, Notification, StateLicence
from imaging.models import Order, Patient, Study
from tests.credentialing.conftest import chicago_time
from tests.credentialing.factories import ShiftFactory

pytestmark = pytest.mark.django_db

NOW = chicago_time(2026, 12, 1, 10, 0)
PDF = b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def patient_study(chicago, sub):
    """A real patient's study at Lakeshore, with names nobody in credentialing may see."""
    patient = Patient.objects.create(
        facility=chicago,
        mrn="MRN-90210",
        assigning_authority="LAKESHORE",
        family_name="Quinlan",
        given_name="Jane",
    )
    order = Order.objects.create(
        facility=chicago,
        patient=patient,
        accession_number="ACC-31337",
        procedure_code="70450",
        procedure_text="CT HEAD WITHOUT CONTRAST",
        reason="Sudden aphasia",
    )
    return Study.objects.create(
        facility=chicago,
        patient=patient,
        order=order,
        study_instance_uid="1.2.840.99.1",
        accession_number="ACC-31337",
        description="CT HEAD WO",
        modalities="CT",
        subspecialty=sub("neuro"),
    )


PATIENT_MARKERS = [b"Quinlan", b"QUINLAN", b"MRN-90210", b"ACC-31337", b"Sudden aphasia", b"CT HEAD"]


def _no_patient_data(content: bytes) -> None:
    leaked = [m for m in PATIENT_MARKERS if m in content]
    assert not leaked, leaked


def test_mso_pages_never_show_patient_data(
    client, mso_mary, dr_neuro_il, neuro_il_credentials, patient_study, chicago, isolated_storage
):
    # given a credentialed reader with a dossier, and a patient's study at the same facility
    profile = dr_neuro_il.radiologist_profile
    ShiftFactory(
        radiologist=dr_neuro_il, starts_at=NOW - timedelta(hours=1), ends_at=NOW + timedelta(hours=8)
    )
    client.force_login(mso_mary)
    pages = [
        "/credentialing/",
        "/credentialing/applications/",
        "/credentialing/expiring/",
        "/credentialing/forecast/",
        "/credentialing/notifications/",
        "/credentialing/readers/",
        f"/credentialing/profiles/{profile.pk}/",
        f"/credentialing/privileges/{neuro_il_credentials['privilege'].pk}/",
        f"/credentialing/facilities/{chicago.code}/",
        f"/credentialing/profiles/{profile.pk}/packet/{chicago.code}.pdf",
    ]
    # when the MSO opens every credentialing page
    for url in pages:
        response = client.get(url)
        # then each works and none shows the patient, the order or the study
        assert response.status_code == 200, url
        _no_patient_data(response.content)


def test_mso_is_refused_patient_records_in_the_admin(client, mso_mary, patient_study):
    client.force_login(mso_mary)
    for url in [
        "/admin/imaging/patient/",
        "/admin/imaging/study/",
        f"/admin/imaging/patient/{patient_study.patient_id}/change/",
    ]:
        response = client.get(url)
        assert response.status_code in (302, 403), url
        _no_patient_data(response.content)


def test_mso_eligibility_api_answers_without_patient_data(
    client, mso_mary, dr_neuro_il, neuro_il_credentials, patient_study
):
    # given the MSO and a patient's study
    client.force_login(mso_mary)
    # when they ask whether the neuroradiologist may read it
    response = client.get(f"/api/v1/eligibility/?radiologist={dr_neuro_il.pk}&study={patient_study.pk}")
    # then they get the answer and the reasons only
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"radiologist", "study", "at", "eligible", "reasons"}
    assert body["eligible"] is False
    assert body["reasons"] == [{"code": "shift", "message": "not on shift at 10:00 CST"}]
    _no_patient_data(response.content)


def test_radiologist_may_only_ask_about_themselves(
    verified_client, dr_neuro_il, neuro_il_credentials, dr_msk_wi, patient_study
):
    # (privileged at the study's facility: another facility's study is 404, tests/hardening)
    client = verified_client(dr_neuro_il)
    assert (
        client.get(f"/api/v1/eligibility/?radiologist={dr_neuro_il.pk}&study={patient_study.pk}").status_code
        == 200
    )
    assert (
        client.get(f"/api/v1/eligibility/?radiologist={dr_msk_wi.pk}&study={patient_study.pk}").status_code
        == 403
    )


def test_facility_admin_sees_only_own_facility_readers(
    client, admin_chicago, neuro_il_credentials, msk_wi_credentials, lakeview
):
    # given readers privileged at Lakeshore (Chicago) and at Lakeview (Wisconsin)
    client.force_login(admin_chicago)
    # when Chicago's admin lists readers
    page = client.get("/credentialing/readers/")
    # then only Lakeshore's reader is listed
    assert page.status_code == 200
    assert b"dr_neuro_il" in page.content
    assert b"dr_msk_wi" not in page.content and b"Lakeview" not in page.content
    # and asking for Lakeview directly is the same as asking for nothing
    assert client.get("/credentialing/readers/?facility=WI-LAKEVIEW").status_code == 404
    # the API agrees: Lakeview's privileges are not there, Chicago's are, without the checklist
    listing = client.get("/api/v1/credentialing/privileges/").json()["results"]
    assert [p["facility"] for p in listing] == ["CHI-L1"]
    assert "checklist" not in listing[0]
    lakeview_privilege = msk_wi_credentials["privilege"].pk
    assert client.get(f"/api/v1/credentialing/privileges/{lakeview_privilege}/").status_code == 404
    # and dossiers stay closed to facility admins
    assert (
        client.get(f"/credentialing/profiles/{neuro_il_credentials['licence'].profile_id}/").status_code
        == 404
    )
    assert client.get("/credentialing/").status_code == 403


def test_radiologist_reads_own_dossier_but_cannot_edit_a_licence(
    verified_client, dr_neuro_il, neuro_il_credentials
):
    client = verified_client(dr_neuro_il)
    licence = neuro_il_credentials["licence"]
    profile = dr_neuro_il.radiologist_profile
    # given their own dossier, read-only
    page = client.get("/credentialing/me/")
    assert page.status_code == 200
    assert b"036-142857" in page.content
    assert b"/licences/new/" not in page.content
    # when they try to change their own licence in the page or the API
    form = {
        "state": "IL",
        "number": "036-142857",
        "kind": "full",
        "status": "active",
        "issued_on": "2019-08-01",
        "expires_on": "2035-12-31",
    }
    page_response = client.post(f"/credentialing/profiles/{profile.pk}/licences/{licence.pk}/", form)
    api_response = client.patch(
        f"/api/v1/credentialing/licences/{licence.pk}/",
        {"expires_on": "2035-12-31"},
        content_type="application/json",
    )
    # then both are refused and nothing changed
    assert page_response.status_code == 403
    assert api_response.status_code == 403
    licence.refresh_from_db()
    assert licence.expires_on == date(2027, 7, 31)


def test_radiologist_uploads_a_renewal_and_credentialing_staff_are_told(
    verified_client, dr_neuro_il, mso_mary, isolated_storage
):
    client = verified_client(dr_neuro_il)
    profile = dr_neuro_il.radiologist_profile
    # when they upload the renewed licence to their own dossier
    upload = SimpleUploadedFile("renewal.pdf", PDF, content_type="application/pdf")
    response = client.post(
        f"/credentialing/profiles/{profile.pk}/documents/",
        {"title": "IL licence 2027", "kind": "licence", "file": upload},
    )
    # then it is stored and credentialing staff get a notification
    assert response.status_code == 302
    document = Document.objects.get(profile=profile)
    assert document.uploaded_by == dr_neuro_il
    assert Notification.objects.filter(recipient=mso_mary, message__contains="IL licence 2027").exists()
    # and they can download their own document
    download = client.get(f"/credentialing/documents/{document.pk}/")
    assert download.status_code == 200 and download.content == PDF


def test_radiologist_cannot_upload_to_someone_else(verified_client, dr_neuro_il, dr_msk_wi, isolated_storage):
    client = verified_client(dr_neuro_il)
    upload = SimpleUploadedFile("x.pdf", PDF, content_type="application/pdf")
    response = client.post(
        f"/credentialing/profiles/{dr_msk_wi.radiologist_profile.pk}/documents/",
        {"title": "x", "kind": "other", "file": upload},
    )
    assert response.status_code == 404
    assert not Document.objects.exists()


def test_document_download_is_for_mso_and_owner_and_is_audited(
    client, mso_mary, ops_omar, director_dana, dr_neuro_il, isolated_storage
):
    from auditlog.models import LogEntry

    profile = dr_neuro_il.radiologist_profile
    document = services.document_upload(
        actor=mso_mary, profile=profile, upload=SimpleUploadedFile("cv.pdf", PDF), kind="cv", title="CV"
    )
    # operations read the dossier but not the file
    client.force_login(ops_omar)
    assert client.get(f"/credentialing/profiles/{profile.pk}/").status_code == 200
    assert client.get(f"/credentialing/documents/{document.pk}/").status_code == 404
    # the MSO downloads it, and the download is an audit row
    client.force_login(mso_mary)
    response = client.get(f"/credentialing/documents/{document.pk}/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"].startswith("attachment;")
    access = LogEntry.objects.get_for_object(document).filter(action=LogEntry.Action.ACCESS).get()
    assert access.actor == mso_mary
    assert access.additional_data == {
        "radiologist_id": dr_neuro_il.pk,
        "read": {"kind": "document", "type": "credentialing.document", "id": document.pk},
    }


def test_operations_and_director_read_but_do_not_change(client, ops_omar, dr_neuro_il, neuro_il_credentials):
    client.force_login(ops_omar)
    profile = dr_neuro_il.radiologist_profile
    assert client.get("/credentialing/").status_code == 200
    assert client.get(f"/credentialing/profiles/{profile.pk}/licences/new/").status_code == 403
    response = client.post(
        f"/credentialing/privileges/{neuro_il_credentials['privilege'].pk}/lapse/", {"note": "ops cannot"}
    )
    assert response.status_code == 403
    assert StateLicence.objects.count() == 1


def test_radiologist_home_lists_the_facilities_they_read_for(
    verified_client, dr_neuro_il, neuro_il_credentials, chicago, lakeview
):
    client = verified_client(dr_neuro_il)
    page = client.get("/")
    assert b"Lakeshore Medical Center" in page.content
    assert b"Lakeview" not in page.content
