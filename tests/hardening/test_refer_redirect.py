"""Issue 15 §6: ``POST /qa/refer/<id>/`` for a report that does not exist is a 404, not a 500."""

import pytest

from tests.conftest import enrol_totp

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("target", ["https://evil.example/phish", "/qa/reviews/"])
def test_refer_of_a_missing_report_is_a_404(verified_client, director_dana, target):
    if not director_dana.totpdevice_set.filter(confirmed=True).exists():
        enrol_totp(director_dana)
    client = verified_client(director_dana)
    response = client.post("/qa/refer/999999/", {"next": target, "reason": "x"})
    assert response.status_code == 404
    assert "evil.example" not in response.get("Location", "")
