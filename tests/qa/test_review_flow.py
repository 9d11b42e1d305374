"""Blinded review, RADPEER scoring, adjudication and the confidentiality of each party."""

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from qa.blinding import redact_reader
from qa.models import PeerReview, RadpeerScore, ReviewStatus
from qa.selectors import (
    adjudication_queue,
    discrepancy_rates,
    feedback_for_reader,
    reader_pseudonym,
    review_case_for_reviewer,
    reviews_assigned_to,
)
from qa.services import (
    ReviewRefused,
    adjudication_decide,
    adjudication_feedback_seen,
    peer_review_impression_record,
    peer_review_refer,
    peer_review_score,
    reviewer_pick,
)
from tests.qa.conftest import signed_report
from tests.worklist.conftest import make_study

pytestmark = pytest.mark.django_db


def test_redaction_removes_name_signature_line_and_initials(neuro_readers):
    white = neuro_readers[0]
    text = (
        "Compared with prior read by Dr. White.\nNo bleed. JW / J.W.\nElectronically signed by Jane White, MD"
    )
    redacted = redact_reader(text, white)
    for trace in ("White", "Jane", "JW", "J.W.", "Electronically signed", "dr_white"):
        assert trace not in redacted
    assert "No bleed." in redacted


def test_reviews_spread_across_readers_and_skip_the_author(chicago, neuro_readers, head_ct_read):
    from django.utils import timezone

    first = reviewer_pick(head_ct_read, timezone.now())
    PeerReview.objects.create(
        report=head_ct_read,
        original_reader=neuro_readers[0],
        facility=chicago,
        reviewer=first,
        origin="referred",
        created_at=timezone.now(),
    )
    second = reviewer_pick(head_ct_read, timezone.now())
    assert {first, second} == set(neuro_readers[1:])


def test_blinded_case_then_score_then_adjudication(director_dana, neuro_readers, head_ct_read, dr_msk_wi):
    author, _, _ = neuro_readers
    # given a case referred by the director
    review = peer_review_refer(report_id=head_ct_read.pk, by=director_dana, reason="ED callback")
    reviewer = review.reviewer
    assert list(reviews_assigned_to(reviewer)) == [review]
    # the reviewer first sees the case without the report, then gives a blind impression
    case = review_case_for_reviewer(reviewer, review.pk, reveal_report=False)
    assert case.report_text is None
    peer_review_impression_record(review_id=review.pk, user=reviewer, text="Small left SDH.")
    case = review_case_for_reviewer(reviewer, review.pk, reveal_report=False)
    # blinded: nothing in what the reviewer is shown names the author
    shown = repr(case)
    for trace in ("White", "Jane", "JW", str(author.pk) + ",", author.username):
        assert trace not in shown
    assert "No hemorrhage." in case.report_text
    # nobody else may open the case
    with pytest.raises(PermissionDenied):
        review_case_for_reviewer(author, review.pk, reveal_report=True)
    with pytest.raises(PermissionDenied):
        review_case_for_reviewer(dr_msk_wi, review.pk, reveal_report=True)
    # a significant discrepancy needs a comment, then goes to the director
    with pytest.raises(ValidationError):
        peer_review_score(review_id=review.pk, user=reviewer, score="3b", comment=" ")
    peer_review_score(review_id=review.pk, user=reviewer, score="3b", comment="Missed 4 mm left SDH.")
    with pytest.raises(ReviewRefused):
        peer_review_score(review_id=review.pk, user=reviewer, score="1", comment="")
    assert list(adjudication_queue(director_dana)) == [PeerReview.objects.get(pk=review.pk)]
    with pytest.raises(PermissionDenied):
        adjudication_queue(reviewer)
    with pytest.raises(PermissionDenied):
        adjudication_decide(review_id=review.pk, director=reviewer, final_score="1", feedback="fine")
    # the director changes the score and asks for an addendum
    adjudication = adjudication_decide(
        review_id=review.pk,
        director=director_dana,
        final_score="2b",
        feedback="Subtle but significant SDH; please addend.",
        addendum_requested=True,
    )
    assert PeerReview.objects.get(pk=review.pk).status == ReviewStatus.CLOSED
    with pytest.raises(ReviewRefused):
        adjudication_decide(review_id=review.pk, director=director_dana, final_score="1", feedback="again")
    # the author sees the feedback, confidentially: the selector does not even load the reviewer
    feedback = list(feedback_for_reader(author))
    assert feedback == [adjudication]
    assert feedback_for_reader(reviewer).count() == 0
    assert adjudication_feedback_seen(adjudication_id=adjudication.pk, reader=author)
    assert not adjudication_feedback_seen(adjudication_id=adjudication.pk, reader=author)


def test_referral_is_for_radiologists_and_director_only(mso_mary, head_ct_read):
    with pytest.raises(PermissionDenied):
        peer_review_refer(report_id=head_ct_read.pk, by=mso_mary, reason="curious")


def test_discrepancy_rates_use_adjudicated_scores_and_pseudonyms(
    chicago, director_dana, neuro_readers, head_ct_read
):
    from datetime import timedelta

    from django.utils import timezone

    author = neuro_readers[0]
    concur_read = signed_report(make_study(chicago, code="70450"), author)
    for report, score in ((head_ct_read, "3a"), (concur_read, "1")):
        review = peer_review_refer(report_id=report.pk, by=director_dana, reason="audit")
        peer_review_score(review_id=review.pk, user=review.reviewer, score=score, comment="see images")
        if score == "3a":
            adjudication_decide(
                review_id=review.pk, director=director_dana, final_score="2a", feedback="minor"
            )
    now = timezone.now()
    rows = discrepancy_rates(by="reader", start=now - timedelta(days=1), end=now + timedelta(days=1))
    assert [(r.key, r.reviewed, r.significant) for r in rows] == [(reader_pseudonym(author.pk), 2, 0)]
    assert reader_pseudonym(author.pk) != reader_pseudonym(neuro_readers[1].pk)
    assert author.username not in reader_pseudonym(author.pk)
    assert RadpeerScore.CONCUR == "1"


def test_an_addendum_meets_the_directors_request(
    director_dana, neuro_readers, head_ct_read, django_capture_on_commit_callbacks
):
    from django.utils import timezone

    from reports.services import addendum_sign
    from tests.conftest import PASSWORD

    # given a 3b adjudicated with a request for an addendum
    review = peer_review_refer(report_id=head_ct_read.pk, by=director_dana, reason="ED callback")
    peer_review_score(review_id=review.pk, user=review.reviewer, score="3b", comment="Missed SDH")
    adjudication = adjudication_decide(
        review_id=review.pk,
        director=director_dana,
        final_score="3b",
        feedback="Addend.",
        addendum_requested=True,
    )
    # when the reader signs an addendum to that report
    with django_capture_on_commit_callbacks(execute=True):
        addendum_sign(
            report_id=head_ct_read.pk,
            user=neuro_readers[0],
            text="Small left SDH.",
            secret=PASSWORD,
            at=timezone.now(),
        )
    # then the request is met
    adjudication.refresh_from_db()
    assert adjudication.addendum_signed_at is not None


def test_opening_a_case_is_an_audited_read_of_patient_data(neuro_readers, director_dana, head_ct_read):
    from auditlog.models import LogEntry

    review = peer_review_refer(report_id=head_ct_read.pk, by=director_dana, reason="audit")
    before = LogEntry.objects.filter(action=LogEntry.Action.ACCESS).count()
    review_case_for_reviewer(review.reviewer, review.pk, reveal_report=True)
    assert LogEntry.objects.filter(action=LogEntry.Action.ACCESS).count() == before + 1
