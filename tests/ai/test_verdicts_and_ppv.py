"""The reader's verdict on each AI finding at signing (required where the facility says so, kept with
the report) and each algorithm measured by them: a seeded quarter of 10 positives, 7 confirmed →
PPV 70 % with its Wilson interval; a PPV below the facility's threshold alerts operations once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from imaging.ai import ai_result_record
from imaging.facts import AiFindingFacts, AiResultFacts
from imaging.models import AiFinding
from qa.ai_metrics import ai_ppv_alerts_raise, algorithm_performance
from qa.models import AiAlgorithmAlert
from qa.quarterly import quarter_csv, quarter_figures
from reports.models import AiVerdict, Report, ReportStatus
from reports.services import SigningRefused, report_draft_save, report_sign, report_start
from tests.conftest import PASSWORD
from tests.reports.conftest import FILLED, head_ct_study

pytestmark = pytest.mark.django_db


def ich_result(facility, study, *, present: bool = True, probability: float = 0.93, n: int = 0):
    facts = AiResultFacts(
        source="sr",
        study_instance_uid=study.study_instance_uid,
        accession_number=study.accession_number,
        manufacturer="Aidoc",
        model="BriefCase ICH",
        version="2.1",
        findings=(AiFindingFacts("274100004", "SCT", "Cerebral hemorrhage", present, probability),),
        sop_instance_uid=f"1.2.826.0.1.3680043.10.99.{study.pk}.{n}",
    )
    return ai_result_record(facility=facility, facts=facts)


def test_a_verdict_is_required_at_signing_when_the_facility_says_so(claimed_head_ct, neuro_reader, chicago):
    # given Lakeshore requires a verdict, and the AI found ICH on the claimed head CT
    chicago.ai_verdict_required = True
    chicago.save()
    result = ich_result(chicago, claimed_head_ct)
    finding = AiFinding.objects.get(result=result)
    report = report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now())
    report_draft_save(report_id=report.pk, user=neuro_reader, values=FILLED, at=timezone.now())
    sign = {"report_id": report.pk, "user": neuro_reader, "secret": PASSWORD, "final": True}
    # when the reader signs without a verdict, it is refused and says which finding
    with pytest.raises(SigningRefused) as refused:
        report_sign(**sign, at=timezone.now())
    assert any("Cerebral hemorrhage positive (p=0.93)" in p for p in refused.value.problems)
    # and a verdict that is not one of the three is refused too
    with pytest.raises(SigningRefused):
        report_sign(**sign, at=timezone.now(), ai_verdicts={finding.pk: "maybe"})
    # when they disagree, the report is final and the verdict is kept with it
    signed = report_sign(**sign, at=timezone.now(), ai_verdicts={finding.pk: "disagree"})
    assert signed.status == ReportStatus.FINAL
    verdict = AiVerdict.objects.get(report=signed)
    assert (verdict.finding_id, verdict.verdict, verdict.given_by) == (finding.pk, "disagree", neuro_reader)
    # and the verdict is in the algorithm's figures
    [row] = algorithm_performance(
        start=timezone.now() - timedelta(days=1), end=timezone.now() + timedelta(days=1)
    )
    assert (row.positives, row.confirmed, row.refuted, row.ppv) == (1, 0, 1, 0.0)


def test_without_the_setting_a_report_signs_without_verdicts(claimed_head_ct, neuro_reader, chicago):
    ich_result(chicago, claimed_head_ct)
    report = report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now())
    report_draft_save(report_id=report.pk, user=neuro_reader, values=FILLED, at=timezone.now())
    signed = report_sign(
        report_id=report.pk, user=neuro_reader, secret=PASSWORD, final=True, at=timezone.now()
    )
    assert signed.status == ReportStatus.FINAL and not AiVerdict.objects.exists()


@pytest.fixture
def seeded_quarter(chicago, neuro_reader, ct_head_template):
    """10 ICH positives at Lakeshore, final reports with 7 agree and 3 disagree; 4 negatives, one of
    them reported critical (a miss)."""
    now = timezone.now()
    for i in range(14):
        study = head_ct_study(chicago)
        result = ich_result(chicago, study, present=i < 10, probability=0.9 if i < 10 else 0.05, n=i)
        report = Report.objects.create(
            study=study,
            template_version=ct_head_template,
            author=neuro_reader,
            status=ReportStatus.FINAL,
            signed_by=neuro_reader,
            signed_at=now,
            is_critical=i == 13,
        )
        if i < 10:
            verdict = "agree" if i < 7 else "disagree"
            AiVerdict.objects.create(
                report=report,
                finding=result.findings.get(),
                verdict=verdict,
                given_by=neuro_reader,
                given_at=now,
            )


def test_seeded_10_positives_7_confirmed_give_70_percent_with_the_wilson_interval(seeded_quarter, chicago):
    now = timezone.now()
    [row] = algorithm_performance(start=now - timedelta(days=1), end=now + timedelta(days=1))
    assert (row.facility, row.algorithm, row.code) == ("CHI-L1", "Aidoc BriefCase ICH 2.1", "274100004")
    assert (row.positives, row.assessed, row.confirmed) == (10, 10, 7)
    assert row.ppv == pytest.approx(0.70)
    low, high = row.ppv_interval
    assert (round(low, 3), round(high, 3)) == (0.397, 0.892)  # Wilson, z = 1.96
    assert (row.negatives, row.misses) == (4, 1)
    # and the quarterly pack carries the same row
    year, quarter = now.year, (now.month - 1) // 3 + 1
    figures = quarter_figures(chicago, year, quarter)
    [pack] = figures.algorithms
    assert pack["ppv"] == pytest.approx(0.70) and pack["confirmed"] == 7
    assert "ai,Aidoc BriefCase ICH 2.1,Cerebral hemorrhage (274100004),10,10,7,70.0,39.7,89.2" in quarter_csv(
        figures
    )


def test_a_ppv_below_the_facility_threshold_raises_one_operations_alert(seeded_quarter, chicago):
    now = timezone.now()
    window = {"start": now - timedelta(days=1), "end": now + timedelta(days=1)}
    # given Lakeshore wants at least 80 % of the alerts confirmed
    chicago.ai_ppv_alert_threshold = 0.8
    chicago.save()
    # then 70 % raises one alert, and checking again does not raise a second
    [alert] = ai_ppv_alerts_raise(**window)
    assert (alert.algorithm, alert.finding_code, alert.ppv) == ("Aidoc BriefCase ICH 2.1", "274100004", 0.7)
    assert ai_ppv_alerts_raise(**window) == []
    # and with a threshold it meets, the episode is cleared
    chicago.ai_ppv_alert_threshold = 0.6
    chicago.save()
    ai_ppv_alerts_raise(**window)
    assert AiAlgorithmAlert.objects.get().cleared_at is not None


def test_the_ppv_check_is_on_beat_and_its_task_raises_the_alert(seeded_quarter, chicago, settings):
    import qa.tasks  # noqa: F401 — registered as the worker's autodiscovery registers it
    from radiology.celery import app as celery_app

    # given beat's schedule (the same entries the embedded ticker runs)
    entry = settings.CELERY_BEAT_SCHEDULE["ai-ppv-alerts"]
    assert entry == {"task": "qa.tasks.ai_ppv_alerts_check", "schedule": 3600.0}
    chicago.ai_ppv_alert_threshold = 0.8
    chicago.save()
    # when beat's task runs (by its registered name, as the worker would)
    assert celery_app.tasks[entry["task"]].apply().get(disable_sync_subtasks=False) == 1
    # then the 70 % episode is open, once: the next beat raises nothing
    assert AiAlgorithmAlert.objects.get().ppv == 0.7
    assert celery_app.tasks[entry["task"]].apply().get(disable_sync_subtasks=False) == 0


@pytest.mark.parametrize("in_oru", [True, False])
def test_the_verdict_goes_in_the_oru_only_where_the_facility_asks(
    in_oru, claimed_head_ct, neuro_reader, chicago
):
    from interfaces.hl7.parse import hl7_message
    from interfaces.models import OutboundMessage

    # given Lakeshore sends (or not) verdicts in its ORU, and the AI found ICH on the claimed head CT
    chicago.ai_verdict_in_oru = in_oru
    chicago.save()
    result = ich_result(chicago, claimed_head_ct)
    finding = AiFinding.objects.get(result=result)
    report = report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now())
    report_draft_save(report_id=report.pk, user=neuro_reader, values=FILLED, at=timezone.now())
    # when the reader signs final, disagreeing with the AI
    report_sign(
        report_id=report.pk, user=neuro_reader, secret=PASSWORD, final=True, at=timezone.now(),
        ai_verdicts={finding.pk: "disagree"},
    )  # fmt: skip
    # then the ORU carries one CWE row with the finding, the verdict and the algorithm — or none
    payload = OutboundMessage.objects.get(source=f"report:{report.pk}:final").payload
    rows = [s for s in payload.split("\r") if s.startswith("OBX|") and "|CWE|" in s]
    if not in_oru:
        assert rows == [] and "DISAGREE" not in payload
        return
    [row] = rows
    fields = row.split("|")
    assert fields[3] == "274100004^Cerebral hemorrhage positive (AI)^SCT"
    assert (fields[4], fields[5]) == ("AI1", "DISAGREE^Reader disagrees with the AI finding^99RRAIV")
    assert (fields[11], fields[18]) == ("F", "Aidoc BriefCase ICH 2.1")
    # and the message still parses as the HL7 it claims to be
    assert (
        str(hl7_message(payload).segments("OBX")[-1][5])
        == "DISAGREE^Reader disagrees with the AI finding^99RRAIV"
    )
