"""Where an AI finding is seen (issue 18): the badge on the reader's worklist, the operations
worklist and the report screen; each algorithm's figures on the QA dashboard, with the median
minutes from AI result to claim for re-ranked studies against the others of their class."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from qa.ai_metrics import algorithm_performance
from tests.ai.test_verdicts_and_ppv import ich_result, seeded_quarter  # noqa: F401
from tests.reports.conftest import head_ct_study
from worklist.models import StudyEvent, StudyEventKind
from worklist.services import study_claim, study_route

pytestmark = pytest.mark.django_db

BADGE = "AI: Cerebral hemorrhage p=0.93 · Aidoc BriefCase ICH 2.1"


def routed_head_ct(facility):
    study = head_ct_study(facility, completed_at=timezone.now())
    study_route(study_id=study.pk)
    return study


def test_the_badge_is_on_both_worklists_and_the_report_screen(
    verified_client,
    client,
    neuro_reader,
    ops_omar,
    chicago,
    lakeshore_ai_rules,
    django_capture_on_commit_callbacks,
):
    # given an ICH-positive AI result on a routed head CT
    study = routed_head_ct(chicago)
    with django_capture_on_commit_callbacks(execute=True):
        ich_result(chicago, study)
    # then the reader's worklist row carries the badge
    reader = verified_client(neuro_reader)
    page = reader.get("/worklist/").content.decode()
    assert study.accession_number in page and BADGE in page
    # and once claimed, the report screen
    study_claim(study_id=study.pk, user=neuro_reader, at=timezone.now())
    assert BADGE in reader.get(f"/studies/{study.pk}/report/").content.decode()
    # and the operations worklist
    client.force_login(ops_omar)
    assert BADGE in client.get("/operations/worklist/").content.decode()


def test_a_study_without_a_positive_finding_has_no_badge(
    verified_client, neuro_reader, chicago, lakeshore_ai_rules
):
    study = routed_head_ct(chicago)
    ich_result(chicago, study, present=False, probability=0.02)
    page = verified_client(neuro_reader).get("/worklist/").content.decode()
    assert study.accession_number in page and 'data-testid="ai-badge"' not in page


def test_minutes_to_claim_compare_the_re_ranked_with_the_others_of_the_class(
    neuro_reader, chicago, lakeshore_ai_rules, django_capture_on_commit_callbacks
):
    now = timezone.now()
    # given one head CT the AI re-ranked and claimed 12 minutes after the result
    raised = routed_head_ct(chicago)
    with django_capture_on_commit_callbacks(execute=True):
        ich_result(chicago, raised, n=1)
    assert StudyEvent.objects.filter(study=raised, kind=StudyEventKind.AI_RERANKED).exists()
    study_claim(study_id=raised.pk, user=neuro_reader, at=now + timedelta(minutes=12))
    # and one the rule did not move (its probability under the rule's minimum), claimed 30 minutes
    # after its result
    rule = lakeshore_ai_rules[0]
    rule.min_probability = 0.8
    rule.save()
    other = routed_head_ct(chicago)
    with django_capture_on_commit_callbacks(execute=True):
        ich_result(chicago, other, n=2, probability=0.6)
    assert not StudyEvent.objects.filter(study=other, kind=StudyEventKind.AI_RERANKED).exists()
    study_claim(study_id=other.pk, user=neuro_reader, at=now + timedelta(minutes=30))
    # then the algorithm's row has one median each
    [row] = algorithm_performance(start=now - timedelta(days=1), end=now + timedelta(days=1))
    assert row.positives == 2
    assert row.reranked_median == pytest.approx(12, abs=0.5)
    assert row.other_median == pytest.approx(30, abs=0.5)


def test_the_qa_dashboard_shows_each_algorithms_ppv(verified_client, director_dana, seeded_quarter):  # noqa: F811
    now = timezone.now()
    quarter = f"{now.year}-Q{(now.month - 1) // 3 + 1}"
    page = verified_client(director_dana).get(f"/qa/dashboard/?quarter={quarter}").content.decode()
    table = page[page.index('data-testid="ai-algorithms"') :]
    assert "Aidoc BriefCase ICH 2.1" in table and "Cerebral hemorrhage (274100004)" in table
    assert "70" in table and "39.7–89.2 %" in table
