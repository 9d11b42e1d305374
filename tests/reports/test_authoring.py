"""Starting a report and autosaving drafts: the claimant only, merge fields from the order and the
header, values that must fit their kinds, prior signed reports of the same patient."""

from __future__ import annotations

import pytest
from django.utils import timezone

from reports.models import Report, ReportStatus
from reports.selectors import prior_reports
from reports.services import NotClaimant, ReportError, report_draft_save, report_sign, report_start
from tests.conftest import PASSWORD
from tests.reports.conftest import FILLED, head_ct_study

pytestmark = pytest.mark.django_db


def test_the_claimant_starts_a_report_with_merge_fields_filled(claimed_head_ct, neuro_reader):
    # when the claimant opens the editor
    report = report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now())
    # then the draft is on the facility's template with defaults and merge fields filled
    assert report.status == ReportStatus.DRAFT and report.opened_at is not None
    assert report.values["history"] == "67-year-old female. Sudden left-sided weakness."
    assert report.values["technique"] == "CT HEAD W/O CONTRAST. Contrast: none."
    assert report.values["comparison"] == "None."
    assert report.values["hemorrhage"] == "None"
    # and opening it again returns the same report
    assert report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now()).pk == report.pk


def test_comparison_lists_earlier_studies_of_the_patient_at_the_facility(
    claimed_head_ct, neuro_reader, chicago
):
    # given an earlier study of the same patient at Lakeshore
    earlier = head_ct_study(chicago)
    earlier.patient = claimed_head_ct.patient
    earlier.study_datetime = claimed_head_ct.study_datetime.replace(year=2025)
    earlier.save()
    # when the report is started
    report = report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now())
    # then its comparison names the earlier study's accession and date
    assert report.values["comparison"] == f"CT HEAD W/O CONTRAST ({earlier.accession_number}, 2025-03-01)."


def test_someone_who_does_not_hold_the_study_cannot_start_or_edit(
    claimed_head_ct, neuro_reader, other_neuro_reader
):
    with pytest.raises(NotClaimant):
        report_start(study_id=claimed_head_ct.pk, user=other_neuro_reader, at=timezone.now())
    report = report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now())
    with pytest.raises(NotClaimant):
        report_draft_save(
            report_id=report.pk, user=other_neuro_reader, values={"findings": "x"}, at=timezone.now()
        )


def test_a_draft_may_be_incomplete_but_values_must_fit_their_kinds(claimed_head_ct, neuro_reader):
    report = report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now())
    # when an incomplete draft is saved, it is kept
    report_draft_save(
        report_id=report.pk, user=neuro_reader, values={"findings": "Old infarct."}, at=timezone.now()
    )
    assert Report.objects.get(pk=report.pk).values["findings"] == "Old infarct."
    # when a value does not fit its kind, nothing is saved and the reason is given
    with pytest.raises(ReportError) as refused:
        report_draft_save(
            report_id=report.pk,
            user=neuro_reader,
            values={"aspects": "11", "findings": "changed"},
            at=timezone.now(),
        )
    assert refused.value.problems == ["ASPECTS: between 0 and 10"]
    assert Report.objects.get(pk=report.pk).values["findings"] == "Old infarct."
    with pytest.raises(ReportError, match="Unknown fields"):
        report_draft_save(report_id=report.pk, user=neuro_reader, values={"nope": "x"}, at=timezone.now())


def test_prior_reports_are_the_patients_signed_reports_at_that_facility(
    claimed_head_ct, neuro_reader, chicago, prairie
):
    # given a signed earlier report of the patient, a draft of another earlier study, and nothing elsewhere
    earlier = head_ct_study(chicago)
    earlier.patient = claimed_head_ct.patient
    earlier.save()
    from worklist.models import StudyAssignment

    StudyAssignment.objects.filter(study=earlier).update(claimed_by=neuro_reader, claimed_at=timezone.now())
    signed = report_start(study_id=earlier.pk, user=neuro_reader, at=timezone.now())
    report_draft_save(report_id=signed.pk, user=neuro_reader, values=FILLED, at=timezone.now())
    report_sign(report_id=signed.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=True)
    draft_study = head_ct_study(chicago)
    draft_study.patient = claimed_head_ct.patient
    draft_study.save()
    StudyAssignment.objects.filter(study=draft_study).update(
        claimed_by=neuro_reader, claimed_at=timezone.now()
    )
    report_start(study_id=draft_study.pk, user=neuro_reader, at=timezone.now())
    # then the editor's priors are the signed one only
    assert [r.pk for r in prior_reports(claimed_head_ct)] == [signed.pk]
    assert "No acute intracranial abnormality." in prior_reports(claimed_head_ct)[0].signed_text
