"""The OpenAPI schema (/api/schema/) generates and validates with no warning: every endpoint is
described, every choice set has its own name, FHIR stays out (it has its own specification)."""

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_openapi_schema_validates_without_warnings(tmp_path):
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    schema = target.read_text()
    for path in (
        "/api/v1/worklist/",
        "/api/v1/reports/",
        "/api/v1/qa/reviews/",
        "/api/v1/eligibility/",
        "/api/v1/orders/",
        "/api/v1/studies/",
    ):
        assert f"{path}:" in schema
    assert "/fhir/" not in schema
