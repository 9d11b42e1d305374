"""Read rows say what was read (issue 15): each page, download and API that shows a patient's data
writes an ACCESS row naming the object (type and id) and the kind of read — the images in the
viewer, the report, its PDF, the report API, FHIR."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry
from django.test import Client
from django.utils import timezone

from accounts.tokens import api_token_issue
from reports.services import report_draft_save, report_sign, report_start
from tests.conftest import PASSWORD
from tests.reports.conftest import FILLED

pytestmark = pytest.mark.django_db


@pytest.fixture
def final_report(claimed_head_ct, neuro_reader):
    report = report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now())
    report_draft_save(report_id=report.pk, user=neuro_reader, values=FILLED, at=timezone.now())
    return report_sign(report_id=report.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=True)


def _reads_of(client, path: str, **extra) -> list[dict]:
    before = LogEntry.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    response = client.get(path, **extra)
    assert response.status_code == 200, (path, response.status_code)
    rows = LogEntry.objects.filter(action=LogEntry.Action.ACCESS, pk__gt=before).order_by("pk")
    return [row.additional_data["read"] | {"actor": row.actor_id, "object_pk": row.object_pk} for row in rows]


def test_each_read_names_the_object_and_the_kind(
    final_report, neuro_reader, ops_omar, verified_client, client
):
    study_id, reader = final_report.study_id, neuro_reader.pk
    browser = verified_client(neuro_reader)
    study = {"type": "imaging.study", "id": study_id, "actor": reader, "object_pk": str(study_id)}
    assert _reads_of(browser, f"/studies/{study_id}/viewer/") == [{"kind": "viewer", **study}]
    assert _reads_of(browser, f"/studies/{study_id}/report/") == [{"kind": "report", **study}]
    assert _reads_of(browser, f"/studies/{study_id}/report.pdf") == [{"kind": "pdf", **study}]
    report = {
        "type": "reports.report",
        "id": final_report.pk,
        "actor": reader,
        "object_pk": str(final_report.pk),
    }
    assert _reads_of(browser, f"/api/v1/reports/{final_report.pk}/") == [{"kind": "report", **report}]
    # FHIR, with a hospital system's token (a client of its own: no reader's session)
    token = api_token_issue(user=ops_omar).key
    fhir = _reads_of(
        Client(), f"/fhir/r4/DiagnosticReport/{final_report.pk}", HTTP_AUTHORIZATION=f"Token {token}"
    )
    assert fhir == [{"kind": "fhir", **study, "actor": ops_omar.pk}]
