"""Signing (issue 6): re-authentication, the eligibility engine asked again at that moment, the
claimant, required fields, the signature (who, when, exact text and its SHA-256), the study leaving
the worklist, the ``report_signed`` signal after commit; preliminary reads; addenda."""

from __future__ import annotations

import hashlib
from datetime import datetime, time, timedelta

import pytest
from django.utils import timezone

from credentialing.models import FacilityPrivilege
from imaging.models import Study, StudyStatus
from reports.models import Addendum, Report, ReportStatus, SigningAttempt
from reports.services import (
    NotClaimant,
    NotEligibleToSign,
    ReauthenticationFailed,
    ReportError,
    ReportFinal,
    SigningLocked,
    SigningRefused,
    addendum_sign,
    report_draft_save,
    report_sign,
    report_start,
)
from reports.signals import report_signed
from tests.conftest import PASSWORD
from tests.reports.conftest import FILLED, next_totp
from tests.worklist.conftest import Screens
from worklist.groups import OPERATIONS_GROUP, user_group
from worklist.models import Shift
from worklist.selectors import worklist_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def filled_report(claimed_head_ct, neuro_reader):
    report = report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now())
    report_draft_save(report_id=report.pk, user=neuro_reader, values=FILLED, at=timezone.now())
    return report


@pytest.fixture
def signals():
    received = []

    def receiver(sender, **kwargs):
        received.append((kwargs["report_id"], kwargs["kind"], kwargs.get("addendum_id")))

    report_signed.connect(receiver, dispatch_uid="test-signals")
    yield received
    report_signed.disconnect(dispatch_uid="test-signals")


def test_signing_final_records_the_signature_and_finalizes_the_study(
    filled_report, neuro_reader, claimed_head_ct, signals, django_capture_on_commit_callbacks
):
    # given the screens of operations and the reader
    screens = Screens([OPERATIONS_GROUP, user_group(neuro_reader.pk)])
    at = timezone.now()
    # when the claimant signs with their password
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        report_sign(report_id=filled_report.pk, user=neuro_reader, secret=PASSWORD, at=at, final=True)
    assert signals == []  # nothing before the commit
    for callback in callbacks:
        callback()
    # then the signature records who, when and the exact text, with its SHA-256
    report = Report.objects.get(pk=filled_report.pk)
    assert (report.status, report.signed_by, report.signed_at) == (ReportStatus.FINAL, neuro_reader, at)
    assert report.signed_text.startswith("CLINICAL HISTORY:\n67-year-old female. Sudden left-sided weakness.")
    assert "FINDINGS:\nIntracranial hemorrhage: None\nASPECTS: 10\nNo mass effect." in report.signed_text
    assert report.signed_text.endswith("IMPRESSION:\nNo acute intracranial abnormality.")
    assert report.signed_sha256 == hashlib.sha256(report.signed_text.encode()).hexdigest()
    # and the study is final, leaves the worklist, the screens hear study.finalized, delivery the signal
    assert Study.objects.get(pk=claimed_head_ct.pk).status == StudyStatus.FINAL
    assert claimed_head_ct.pk not in [s.pk for s in worklist_for(neuro_reader, at=timezone.now())]
    types = screens.types()
    assert types[OPERATIONS_GROUP] == ["study.finalized"] and types[user_group(neuro_reader.pk)] == [
        "study.finalized"
    ]
    assert signals == [(report.pk, "final", None)]


def test_a_totp_code_is_accepted_and_cannot_be_replayed(filled_report, neuro_reader):
    code = next_totp(neuro_reader)
    report_sign(report_id=filled_report.pk, user=neuro_reader, secret=code, at=timezone.now(), final=True)
    assert Report.objects.get(pk=filled_report.pk).status == ReportStatus.FINAL
    # the same code again (e.g. for an addendum) is refused
    with pytest.raises(ReauthenticationFailed):
        addendum_sign(report_id=filled_report.pk, user=neuro_reader, text="x", secret=code, at=timezone.now())


def test_a_wrong_password_is_refused_counted_and_locks_after_the_limit(filled_report, neuro_reader, settings):
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(3):
        with pytest.raises(ReauthenticationFailed, match="not accepted"):
            report_sign(
                report_id=filled_report.pk, user=neuro_reader, secret="wrong", at=timezone.now(), final=True
            )
    assert SigningAttempt.objects.filter(user=neuro_reader, report=filled_report).count() == 3
    assert Report.objects.get(pk=filled_report.pk).status == ReportStatus.DRAFT
    # after the limit even the right password is refused for a while
    with pytest.raises(SigningLocked):
        report_sign(
            report_id=filled_report.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=True
        )


def test_signing_is_refused_for_a_reader_whose_privilege_lapsed_an_hour_ago(
    filled_report, neuro_reader, chicago
):
    # given the privilege at Lakeshore expired yesterday (facility time), so it lapsed at local midnight,
    # and the reader is signing at 01:00 Chicago time, on shift
    zone = chicago.zone
    today = timezone.now().astimezone(zone).date()
    at = datetime.combine(today, time(1, 0), tzinfo=zone)
    FacilityPrivilege.objects.filter(profile__user=neuro_reader, facility=chicago).update(
        expires_on=today - timedelta(days=1)
    )
    Shift.objects.create(
        radiologist=neuro_reader, starts_at=at - timedelta(hours=4), ends_at=at + timedelta(hours=4)
    )
    # when they sign
    with pytest.raises(NotEligibleToSign) as refused:
        report_sign(report_id=filled_report.pk, user=neuro_reader, secret=PASSWORD, at=at, final=True)
    # then the refusal carries the reason and nothing was signed
    assert any("privilege" in p.lower() and "expired" in p.lower() for p in refused.value.problems), (
        refused.value.problems
    )
    assert Report.objects.get(pk=filled_report.pk).status == ReportStatus.DRAFT
    # an hour earlier (23:00 the day before, within the privilege's last day) it was allowed
    report_sign(
        report_id=filled_report.pk, user=neuro_reader, secret=PASSWORD, at=at - timedelta(hours=2), final=True
    )


def test_only_the_claimant_signs(filled_report, other_neuro_reader):
    with pytest.raises(NotClaimant):
        report_sign(
            report_id=filled_report.pk,
            user=other_neuro_reader,
            secret=PASSWORD,
            at=timezone.now(),
            final=True,
        )


def test_a_missing_required_field_refuses_signing(filled_report, neuro_reader):
    report_draft_save(
        report_id=filled_report.pk, user=neuro_reader, values={"impression": ""}, at=timezone.now()
    )
    with pytest.raises(SigningRefused) as refused:
        report_sign(
            report_id=filled_report.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=True
        )
    assert refused.value.problems == ["Impression: required to sign"]


def test_a_preliminary_read_only_where_the_facility_takes_them(
    filled_report, neuro_reader, chicago, signals, django_capture_on_commit_callbacks
):
    with pytest.raises(SigningRefused, match="does not take preliminary reads"):
        report_sign(
            report_id=filled_report.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=False
        )
    chicago.accepts_preliminary = True
    chicago.save()
    with django_capture_on_commit_callbacks(execute=True):
        report_sign(
            report_id=filled_report.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=False
        )
    report = Report.objects.get(pk=filled_report.pk)
    assert report.status == ReportStatus.PRELIMINARY and report.preliminary_at is not None
    assert Study.objects.get(pk=report.study_id).status != StudyStatus.FINAL  # the final read follows
    # the final read follows, and can still be edited before it
    report_draft_save(
        report_id=report.pk, user=neuro_reader, values={"findings": "Tiny old infarct."}, at=timezone.now()
    )
    with django_capture_on_commit_callbacks(execute=True):
        report_sign(report_id=report.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=True)
    assert [kind for _, kind, _ in signals] == ["preliminary", "final"]


def test_a_final_report_cannot_be_signed_or_edited_again(filled_report, neuro_reader):
    report_sign(report_id=filled_report.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=True)
    with pytest.raises(ReportFinal):
        report_sign(
            report_id=filled_report.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=True
        )
    with pytest.raises(ReportFinal):
        report_draft_save(
            report_id=filled_report.pk, user=neuro_reader, values={"findings": "x"}, at=timezone.now()
        )


def test_addenda_are_signed_numbered_and_announced(
    filled_report, neuro_reader, other_neuro_reader, signals, django_capture_on_commit_callbacks
):
    # an addendum needs a final report
    with pytest.raises(ReportError, match="Only a final report"):
        addendum_sign(
            report_id=filled_report.pk, user=neuro_reader, text="x", secret=PASSWORD, at=timezone.now()
        )
    report_sign(report_id=filled_report.pk, user=neuro_reader, secret=PASSWORD, at=timezone.now(), final=True)
    # when the reader and then an eligible colleague addend it
    with django_capture_on_commit_callbacks(execute=True):
        first = addendum_sign(
            report_id=filled_report.pk,
            user=neuro_reader,
            text="Left MCA dot sign.",
            secret=PASSWORD,
            at=timezone.now(),
        )
        second = addendum_sign(
            report_id=filled_report.pk,
            user=other_neuro_reader,
            text="Discussed.",
            secret=PASSWORD,
            at=timezone.now(),
        )
    # then they are numbered in order, each signed, and delivery hears of each
    assert [(a.sequence, a.author_id) for a in Addendum.objects.filter(report=filled_report)] == [
        (1, neuro_reader.pk),
        (2, other_neuro_reader.pk),
    ]
    assert len(first.signature) == 64 and first.signature != second.signature
    assert signals == [(filled_report.pk, "addendum", first.pk), (filled_report.pk, "addendum", second.pk)]
    # and the wrong password refuses an addendum
    with pytest.raises(ReauthenticationFailed):
        addendum_sign(
            report_id=filled_report.pk, user=neuro_reader, text="x", secret="nope", at=timezone.now()
        )
