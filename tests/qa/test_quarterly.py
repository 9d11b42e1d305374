"""The quarterly QA report: figures for a seeded quarter, in the CSV and in the PDF; generated once
per facility after the quarter ends; a facility admin gets only their own facility's."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pypdf import PdfReader

from facilities.models import PriorityClass
from qa.metrics import percentile, quarter_bounds
from qa.models import QuarterlyReport
from qa.quarterly import quarter_figures, quarterly_report_generate
from qa.selectors import reader_pseudonym
from qa.services import (
    adjudication_decide,
    peer_review_refer,
    peer_review_score,
    quarterly_reports_due_generate,
)
from reports.models import CriticalResultCommunication
from tests.qa.conftest import signed_report
from tests.worklist.conftest import make_study
from worklist.models import StudyAssignment

pytestmark = pytest.mark.django_db
CHICAGO = ZoneInfo("America/Chicago")


def _read(facility, reader, *, priority, modality, started, tat_minutes, target_minutes, **extra):
    study = make_study(
        facility, code="70450" if modality == "CT" else "71046", modalities=modality, priority=priority
    )
    start = datetime(2026, 8, 3, 10, 0, tzinfo=CHICAGO) + timedelta(hours=started)
    StudyAssignment.objects.create(
        study=study, clock_started_at=start, sla_deadline=start + timedelta(minutes=target_minutes)
    )
    return signed_report(study, reader, signed_at=start + timedelta(minutes=tat_minutes), **extra)


@pytest.fixture
def seeded_quarter(chicago, neuro_readers, director_dana):
    author = neuro_readers[0]
    reads = [
        _read(
            chicago,
            author,
            priority=PriorityClass.STAT,
            modality="CT",
            started=0,
            tat_minutes=20,
            target_minutes=30,
            is_critical=True,
            critical_marked_at=datetime(2026, 8, 3, 10, 5, tzinfo=CHICAGO),
        ),
        _read(
            chicago,
            author,
            priority=PriorityClass.STAT,
            modality="CT",
            started=1,
            tat_minutes=40,
            target_minutes=30,
            is_critical=True,
            critical_marked_at=datetime(2026, 8, 3, 11, 5, tzinfo=CHICAGO),
        ),
        _read(
            chicago,
            author,
            priority=PriorityClass.ROUTINE,
            modality="DX",
            started=2,
            tat_minutes=60,
            target_minutes=1440,
        ),
        _read(
            chicago,
            author,
            priority=PriorityClass.ROUTINE,
            modality="DX",
            started=3,
            tat_minutes=120,
            target_minutes=1440,
        ),
    ]
    # two critical results: one told 20 minutes after it was marked, one 90 minutes (target 60)
    for read, minutes_late in ((reads[0], 20), (reads[1], 90)):
        CriticalResultCommunication.objects.create(
            report=read,
            person_notified="Dr Emily Stone",
            role="ED attending",
            method="phone",
            communicated_at=read.critical_marked_at + timedelta(minutes=minutes_late),
            read_back_confirmed=True,
            recorded_by=author,
        )
    review = peer_review_refer(report_id=reads[0].pk, by=director_dana, reason="audit", at=reads[0].signed_at)
    peer_review_score(
        review_id=review.pk, user=review.reviewer, score="3b", comment="missed", at=reads[0].signed_at
    )
    adjudication_decide(review_id=review.pk, director=director_dana, final_score="3b", feedback="see me")
    return reads


def test_figures_of_a_seeded_quarter(chicago, neuro_readers, seeded_quarter):
    figures = quarter_figures(chicago, 2026, 3)
    assert figures.volume_by_modality == {"CT": 2, "DX": 2}
    stat = next(r for r in figures.tat if r.priority == "STAT")
    routine = next(r for r in figures.tat if r.priority == "ROUTINE")
    assert (stat.reads, stat.p50, stat.p90, stat.within_sla, stat.target_minutes) == (2, 20, 40, 1, 30)
    assert (routine.reads, routine.p50, routine.p90, routine.within_sla) == (2, 60, 120, 2)
    assert figures.sla_compliance == 0.75
    assert (figures.critical_results, figures.critical_within_target, figures.critical_compliance) == (
        2,
        1,
        0.5,
    )
    assert [(d["reader"], d["reviewed"], d["significant"]) for d in figures.discrepancies] == [
        (reader_pseudonym(neuro_readers[0].pk), 1, 1)
    ]
    # the quarter before is empty
    assert quarter_figures(chicago, 2026, 2).reads == 0


def test_csv_and_pdf_carry_the_figures_and_no_reader_names(chicago, neuro_readers, seeded_quarter):
    report = quarterly_report_generate(facility=chicago, year=2026, quarter=3)
    assert "tat,STAT,2,20.0,40.0,30,50.0" in report.csv
    assert "sla,all,4,,,,75.0" in report.csv
    assert "critical_results,communicated_within_target,2,,,,50.0" in report.csv
    text = "\n".join(
        page.extract_text() for page in PdfReader(__import__("io").BytesIO(bytes(report.pdf))).pages
    )
    assert "Lakeshore" in text or chicago.name in text
    # one number format (issue 19): rates as percentages, the Wilson interval in percent too
    assert "within 60 minutes of being marked: 50 %" in text.replace("\n", " ")
    assert "SLA compliance, all priorities: 75 %" in text and reader_pseudonym(neuro_readers[0].pk) in text
    assert "0.500" not in text and "0.750" not in text
    for document in (report.csv, text):
        assert "White" not in document and neuro_readers[0].username not in document


def test_generated_once_per_facility_after_the_quarter_ends(chicago, prairie, lakeview, seeded_quarter):
    october = datetime(2026, 10, 1, 12, 0, tzinfo=CHICAGO)
    assert quarterly_reports_due_generate(at=october) == 3
    assert quarterly_reports_due_generate(at=october + timedelta(hours=6)) == 0
    assert set(QuarterlyReport.objects.values_list("year", "quarter")) == {(2026, 3)}


def test_downloads_are_scoped_to_the_admins_facility(
    client, chicago, lakeview, admin_chicago, admin_lakeview, seeded_quarter
):
    quarterly_report_generate(facility=chicago, year=2026, quarter=3)
    url = f"/qa/quarterly/{chicago.code}/2026-Q3.pdf"
    client.force_login(admin_chicago)
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert client.get(f"/qa/quarterly/{chicago.code}/2026-Q3.csv").status_code == 200
    # another facility's admin: the same 404 as for a report that does not exist, and no generating it
    client.force_login(admin_lakeview)
    assert client.get(url).status_code == 404
    assert client.post("/qa/quarterly/", {"facility": chicago.code, "quarter": "2026-Q3"}).status_code == 403
    # … nor any individual peer-review record
    for page in ("/qa/adjudication/", "/qa/dashboard/", "/qa/reviews/"):
        assert client.get(page).status_code == 403


def test_director_dashboard_shows_names_and_rates(
    verified_client, director_dana, neuro_readers, seeded_quarter
):
    page = verified_client(director_dana).get("/qa/dashboard/?quarter=2026-Q3").content.decode()
    assert str(neuro_readers[0]) in page and "100 %" in page
    assert "2 critical results; communicated within the facility's target: 50 %" in page
    # one number format: the Wilson interval of 1 in 1 in percent (20.7–100 %), no 0.207–1.000
    assert "20.7–100 %" in page and "0.207" not in page
    # the chart's labels follow the theme (currentColor), its bars carry classes app.css colours
    assert 'class="chart"' in page and 'fill="currentColor">STAT' in page


def test_quarter_bounds_and_nearest_rank_percentile():
    start, end = quarter_bounds(2026, 4, CHICAGO)
    assert (start.isoformat(), end.isoformat()) == ("2026-10-01T00:00:00-05:00", "2027-01-01T00:00:00-06:00")
    assert percentile([5, 1, 3, 2, 4], 0.9) == 5 and percentile([], 0.5) is None
