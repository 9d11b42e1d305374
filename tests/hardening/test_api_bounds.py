"""Issue 15 §2: the two 500s schemathesis found — a huge worklist offset, a non-integer id."""

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("offset", ["99999999999999999999", "9223372036854775808", "1000001"])
def test_a_huge_worklist_offset_is_a_400(ops_omar, offset):
    client = APIClient()
    client.force_authenticate(ops_omar)
    response = client.get(f"/api/v1/worklist/?offset={offset}")
    assert response.status_code == 400, response.content
    assert "offset" in response.json()


def test_a_huge_limit_is_capped_not_a_500(ops_omar):
    client = APIClient()
    client.force_authenticate(ops_omar)
    assert client.get("/api/v1/worklist/?limit=99999999999999999999").status_code == 200


def test_a_non_integer_document_id_is_a_404(mso_mary):
    client = APIClient()
    client.force_authenticate(mso_mary)
    assert client.get("/api/v1/documents/abc/").status_code == 404
    assert client.get("/api/v1/documents/abc/content/").status_code == 404
