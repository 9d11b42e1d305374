"""The credentialing REST API: token-authenticated writes by credentialing staff go through the same
services (and the audit log knows who), the privilege workflow answers 409 when a step is not
allowed, reads are scoped, and everything is in the OpenAPI schema."""

from __future__ import annotations

from datetime import timedelta

import pytest
from auditlog.models import LogEntry
from rest_framework.test import APIClient

from accounts.tokens import api_token_issue
from credentialing import services
from credentialing.models import StateLicence
from tests.credentialing.conftest import chicago_time
from tests.credentialing.factories import LicenceFactory, ShiftFactory, StudyFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def mso_api(mso_mary) -> APIClient:
    """A credentials-verification system calling with the MSO's token."""
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token_issue(user=mso_mary).key}")
    return api


def test_a_licence_recorded_by_token_is_audited_as_its_caller(mso_api, mso_mary, dr_neuro_il):
    # when a verification system records a licence with the MSO's token
    response = mso_api.post(
        "/api/v1/credentialing/licences/",
        {
            "profile": dr_neuro_il.radiologist_profile.pk,
            "state": "IL",
            "number": "036-900001",
            "status": "active",
            "issued_on": "2021-05-01",
            "expires_on": "2027-07-31",
        },
        format="json",
    )
    # then it exists and the audit log names the token's user
    assert response.status_code == 201, response.content
    licence = StateLicence.objects.get(number="036-900001")
    entry = LogEntry.objects.get_for_object(licence).get()
    assert entry.actor == mso_mary
    assert entry.additional_data == {"radiologist_id": dr_neuro_il.pk}


def test_invalid_dates_are_refused_with_a_reason(mso_api, dr_neuro_il):
    response = mso_api.post(
        "/api/v1/credentialing/licences/",
        {
            "profile": dr_neuro_il.radiologist_profile.pk,
            "state": "IL",
            "number": "036-1",
            "status": "active",
            "issued_on": "2027-05-01",
            "expires_on": "2021-07-31",
        },
        format="json",
    )
    assert response.status_code == 400
    assert "licence_expires_after_issue" in str(response.json())


def test_verification_by_api_records_the_caller(mso_api, mso_mary, dr_neuro_il):
    licence = LicenceFactory(profile=dr_neuro_il.radiologist_profile)
    response = mso_api.post(
        f"/api/v1/credentialing/licences/{licence.pk}/verify/",
        {"method": "fsmb", "note": "FCVS report"},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["verified_by"] == "mso_mary"
    assert response.json()["verification_method"] == "fsmb"


def test_the_privilege_workflow_by_api(mso_api, mso_mary, dr_msk_wi, lakeview):
    # given an application opened through the API
    created = mso_api.post(
        "/api/v1/credentialing/privileges/",
        {
            "profile": dr_msk_wi.radiologist_profile.pk,
            "facility": "WI-LAKEVIEW",
            "scope_subspecialties": ["msk"],
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    privilege = created.json()
    assert privilege["status"] == "applied"
    assert privilege["checklist"], "the facility's checklist comes with the application"
    url = f"/api/v1/credentialing/privileges/{privilege['id']}"
    # approving before review is a conflict, with the reason
    refused = mso_api.post(f"{url}/approve/", {"granted_on": "2026-12-01"}, format="json")
    assert refused.status_code == 409
    assert "cannot become approved" in refused.json()["detail"]
    # review, complete the checklist, approve
    assert mso_api.post(f"{url}/review/").json()["status"] == "in_review"
    missing = mso_api.post(f"{url}/approve/", {"granted_on": "2026-12-01"}, format="json")
    assert missing.status_code == 409 and "still open" in missing.json()["detail"]
    for item in services.FacilityPrivilege.objects.get(pk=privilege["id"]).checklist.all():
        services.checklist_item_complete(actor=mso_mary, item=item)
    approved = mso_api.post(f"{url}/approve/", {"granted_on": "2026-12-01"}, format="json")
    assert approved.status_code == 200
    assert (approved.json()["status"], approved.json()["expires_on"]) == ("approved", "2028-11-30")


def test_writes_need_credentialing_staff(ops_omar, dr_neuro_il):
    api = APIClient()
    api.force_authenticate(ops_omar)
    response = api.post(
        "/api/v1/credentialing/licences/",
        {
            "profile": dr_neuro_il.radiologist_profile.pk,
            "state": "IL",
            "number": "x",
            "status": "active",
            "issued_on": "2021-05-01",
            "expires_on": "2027-07-31",
        },
        format="json",
    )
    assert response.status_code == 403
    assert api.get("/api/v1/credentialing/licences/").status_code == 200


def test_a_radiologist_token_sees_only_their_own_records(
    dr_neuro_il, dr_msk_wi, neuro_il_credentials, msk_wi_credentials
):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token_issue(user=dr_msk_wi).key}")
    licences = api.get("/api/v1/credentialing/licences/").json()["results"]
    assert [lic["number"] for lic in licences] == ["61842-20"]
    assert api.get(f"/api/v1/credentialing/licences/{neuro_il_credentials['licence'].pk}/").status_code == 404


def test_eligibility_by_api_with_a_time(mso_api, dr_neuro_il, neuro_il_credentials, chicago, sub):
    at = chicago_time(2026, 12, 31, 23, 59)
    ShiftFactory(radiologist=dr_neuro_il, starts_at=at - timedelta(hours=1), ends_at=at + timedelta(hours=2))
    study = StudyFactory(facility=chicago, subspecialty=sub("neuro"))
    ask = {"radiologist": dr_neuro_il.pk, "study": study.pk}
    ok = mso_api.get("/api/v1/eligibility/", {**ask, "at": at.isoformat()})
    assert ok.status_code == 200
    assert ok.json()["eligible"] is True and ok.json()["reasons"] == []
    late = mso_api.get(
        "/api/v1/eligibility/", {**ask, "at": (at + timedelta(hours=2, minutes=1)).isoformat()}
    )
    assert late.json()["eligible"] is False
    assert [r["code"] for r in late.json()["reasons"]] == ["shift"]
    naive = mso_api.get("/api/v1/eligibility/", {**ask, "at": "2026-12-31T23:59:00"})
    assert naive.status_code == 400  # no offset: ambiguous
    assert mso_api.get("/api/v1/eligibility/?radiologist=1").status_code == 400
    assert mso_api.get(f"/api/v1/eligibility/?radiologist={dr_neuro_il.pk}&study=999999").status_code == 404


def test_the_openapi_schema_documents_credentialing(client, mso_mary):
    client.force_login(mso_mary)
    schema = client.get("/api/schema/?format=json").json()
    paths = schema["paths"]
    for path in [
        "/api/v1/credentialing/profiles/",
        "/api/v1/credentialing/licences/",
        "/api/v1/credentialing/licences/{id}/verify/",
        "/api/v1/credentialing/boards/",
        "/api/v1/credentialing/privileges/{id}/approve-by-proxy/",
        "/api/v1/credentialing/documents/",
        "/api/v1/eligibility/",
    ]:
        assert path in paths, path
    parameters = {p["name"] for p in paths["/api/v1/eligibility/"]["get"]["parameters"]}
    assert {"radiologist", "study", "at"} <= parameters
