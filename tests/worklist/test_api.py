"""POST /api/v1/worklist/<study>/claim/ and …/release/: 200, 409 (naming the holder to operations
only), 403 with the reasons, 404 for what the caller may not see; signing roles need a verified
second factor."""

import pytest
from django.utils import timezone

from tests.worklist.conftest import make_study
from worklist.models import StudyAssignment
from worklist.services import study_claim, study_route

pytestmark = pytest.mark.django_db


@pytest.fixture
def head_ct(chicago):
    study = make_study(chicago, code="70450", description="CT HEAD WO")
    study_route(study_id=study.pk)
    return study


def _claim(client, study):
    return client.post(f"/api/v1/worklist/{study.pk}/claim/")


def _release(client, study):
    return client.post(f"/api/v1/worklist/{study.pk}/release/")


def test_claim_and_release(verified_client, neuro_reader, head_ct):
    client = verified_client(neuro_reader)
    response = _claim(client, head_ct)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["study"] == head_ct.pk
    assert body["claimed_by"] == {"id": neuro_reader.pk, "name": "Dr dr_neuro_il"}
    assert body["claimed_at"]
    assert _claim(client, head_ct).status_code == 200  # claiming one's own study again is fine
    response = _release(client, head_ct)
    assert response.status_code == 200
    assert response.json()["claimed_by"] is None
    assert StudyAssignment.objects.get(study=head_ct).claimed_by is None


def test_claimed_by_another_reader_is_409_without_a_name(
    verified_client, neuro_reader, other_neuro_reader, head_ct
):
    study_claim(study_id=head_ct.pk, user=other_neuro_reader, at=timezone.now())
    client = verified_client(neuro_reader)
    response = _claim(client, head_ct)
    assert response.status_code == 409
    assert response.json() == {"detail": "Claimed by another radiologist."}
    assert b"dr_neuro_two" not in response.content
    response = _release(client, head_ct)
    assert response.status_code == 409
    assert response.json() == {"detail": "Claimed by another radiologist."}
    assert StudyAssignment.objects.get(study=head_ct).claimed_by == other_neuro_reader


def test_operations_learn_who_holds_it(client, ops_omar, neuro_reader, head_ct):
    study_claim(study_id=head_ct.pk, user=neuro_reader, at=timezone.now())
    client.force_login(ops_omar)
    response = _release(client, head_ct)
    assert response.status_code == 409
    assert response.json()["claimed_by"] == {"id": neuro_reader.pk, "name": "Dr dr_neuro_il"}
    # operations may see the study but cannot read it
    response = _claim(client, make_study(head_ct.facility, code="70450"))
    assert response.status_code == 403
    assert response.json()["reasons"] == ["not a radiologist with a reading profile"]


def test_release_of_an_unclaimed_study_is_409(verified_client, neuro_reader, head_ct):
    response = _release(verified_client(neuro_reader), head_ct)
    assert response.status_code == 409
    assert response.json() == {"detail": "You do not hold this study.", "claimed_by": None}


def test_not_eligible_is_403_with_every_reason(verified_client, dr_neuro_il, neuro_il_credentials, chicago):
    # licensed and privileged at Lakeshore, but off shift and not an MSK reader
    knee = make_study(chicago, code="73721", modalities="MR")
    study_route(study_id=knee.pk)
    response = _claim(verified_client(dr_neuro_il), knee)
    assert response.status_code == 403
    reasons = response.json()["reasons"]
    assert "not a musculoskeletal radiologist" in reasons
    assert any(r.startswith("not on shift at") for r in reasons)
    assert not StudyAssignment.objects.filter(study=knee, claimed_by__isnull=False).exists()


def test_another_facilitys_study_is_404(verified_client, neuro_reader, lakeview):
    study = make_study(lakeview, code="70450")
    study_route(study_id=study.pk)
    client = verified_client(neuro_reader)
    assert _claim(client, study).status_code == 404
    assert _release(client, study).status_code == 404
    assert client.post("/api/v1/worklist/999999/claim/").status_code == 404


def test_unverified_radiologist_is_refused(client, neuro_reader, head_ct):
    client.force_login(neuro_reader)
    response = _claim(client, head_ct)
    assert response.status_code == 403
    assert response.json() == {"detail": "A verified second factor is required."}
    assert StudyAssignment.objects.get(study=head_ct).claimed_by is None


def test_anonymous_is_refused(client, head_ct):
    assert _claim(client, head_ct).status_code in (401, 403)


def test_token_authentication(neuro_reader, head_ct):
    """API clients with a token (issued to an enrolled user) follow the same rules."""
    from rest_framework.test import APIClient

    from accounts.tokens import api_token_issue

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token_issue(user=neuro_reader).key}")
    response = api.post(f"/api/v1/worklist/{head_ct.pk}/claim/")
    assert response.status_code == 200, response.content
    assert StudyAssignment.objects.get(study=head_ct).claimed_by == neuro_reader


def test_documented_in_openapi_schema(client, ops_omar):
    client.force_login(ops_omar)
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    paths = response.json()["paths"]
    claim = paths["/api/v1/worklist/{study_id}/claim/"]["post"]
    assert {"200", "403", "404", "409"} <= set(claim["responses"])
    assert "/api/v1/worklist/{study_id}/release/" in paths
