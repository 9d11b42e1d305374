"""Signed reads to review: a final report by one neuro reader at Lakeshore, and colleagues; the
same read referred for review (shared with the browser test, tests/e2e/test_peer_review.py)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from qa.models import PeerReview
from qa.services import peer_review_refer
from reports.models import Report, ReportStatus, ReportTemplate, TemplateVersion
from tests.conftest import enrol_totp, make_radiologist
from tests.worklist.conftest import make_eligible, make_study

CONTENT = {
    "sections": [
        {"key": "impression", "title": "Impression", "fields": [{"key": "impression", "label": "Impression"}]}
    ]
}


def signed_report(
    study, reader, text: str = "No acute intracranial abnormality.", signed_at=None, **extra
) -> Report:
    template, _ = ReportTemplate.objects.get_or_create(name="QA test", facility=None)
    version, _ = TemplateVersion.objects.get_or_create(
        template=template, number=1, defaults={"content": CONTENT}
    )
    now = signed_at or timezone.now()
    # created final in one INSERT: a final report refuses every UPDATE (reports.setup)
    return Report.objects.create(
        study=study,
        template_version=version,
        author=reader,
        status=ReportStatus.FINAL,
        values={"impression": text},
        signed_by=reader,
        signed_at=now,
        signed_text=text,
        **extra,
    )


@pytest.fixture
def neuro_readers(chicago):
    """Three neuro readers eligible at Lakeshore: the first signs, the others may review."""
    readers = []
    for name, first, last in (
        ("dr_white", "Jane", "White"),
        ("dr_okafor", "Ada", "Okafor"),
        ("dr_lee", "Min", "Lee"),
    ):
        reader = make_radiologist(name, "neuro")
        reader.first_name, reader.last_name, reader.display_name = first, last, f"{first} {last}, MD"
        reader.save()
        make_eligible(reader, chicago)
        enrol_totp(reader)
        readers.append(reader)
    return readers


@pytest.fixture
def head_ct_read(chicago, neuro_readers):
    from worklist.services import study_route

    study = make_study(chicago, code="70450", text="CT HEAD WO CONTRAST", description="CT HEAD WO")
    study_route(study_id=study.pk)
    study.refresh_from_db()
    return signed_report(
        study,
        neuro_readers[0],
        "Findings discussed with Dr. Patel at 03:10.\nNo hemorrhage. JW\n"
        "Electronically signed by Jane White, MD",
    )


@pytest.fixture
def referred(director_dana, head_ct_read) -> PeerReview:
    """``head_ct_read`` referred by the director: assigned to a colleague (dr_okafor, the first with
    the fewest open reviews), who must not learn that dr_white read it."""
    return peer_review_refer(report_id=head_ct_read.pk, by=director_dana, reason="ED callback")
