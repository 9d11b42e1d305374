"""Peer-review notices on the live channel (issue 14, worklist.notices): the reviewer is told a case
waits for them — blinded, nothing names the reader — and the original reader that feedback is in;
each on their own socket group only."""

from __future__ import annotations

import json

import pytest

from qa.services import (
    adjudication_decide,
    peer_review_impression_record,
    peer_review_refer,
    peer_review_score,
)
from tests.worklist.conftest import Screens
from worklist.groups import DIRECTOR_GROUP, OPERATIONS_GROUP, user_group
from worklist.models import NoticeKind, UserNotice

pytestmark = pytest.mark.django_db


def notices(received: dict, group: str) -> list[dict]:
    return [e["notice"] for e in received[group] if e["type"] == "notice"]


def test_the_reviewer_and_then_the_original_reader_are_told_and_nobody_else(
    director_dana, neuro_readers, head_ct_read, django_capture_on_commit_callbacks
):
    author, _, _ = neuro_readers
    everyone = [user_group(u.pk) for u in (*neuro_readers, director_dana)]
    screens = Screens([OPERATIONS_GROUP, DIRECTOR_GROUP, *everyone])
    # when the director refers the read for review
    with django_capture_on_commit_callbacks(execute=True):
        review = peer_review_refer(report_id=head_ct_read.pk, by=director_dana, reason="ED callback")
    received = screens.received()
    reviewer = review.reviewer
    # then the reviewer's pages — only theirs — say a case waits, with the way to it
    [notice] = notices(received, user_group(reviewer.pk))
    assert notice["kind"] == NoticeKind.PEER_REVIEW and notice["url"] == f"/qa/reviews/{review.pk}/"
    assert notice["text"] == "Lakeshore Medical Center · CT case to review"
    # blinded: nothing names the original reader nor points at the study
    for trace in ("White", "Jane", author.username, head_ct_read.study.accession_number):
        assert trace not in json.dumps(notice)
    assert notice["study"] is None
    for group in [OPERATIONS_GROUP, DIRECTOR_GROUP, *everyone]:
        if group != user_group(reviewer.pk):
            assert notices(received, group) == [], group

    # when the reviewer scores a discrepancy and the director decides
    peer_review_impression_record(review_id=review.pk, user=reviewer, text="Small left SDH.")
    peer_review_score(review_id=review.pk, user=reviewer, score="3b", comment="Missed 4 mm left SDH.")
    with django_capture_on_commit_callbacks(execute=True):
        adjudication = adjudication_decide(
            review_id=review.pk,
            director=director_dana,
            final_score="2b",
            feedback="Subtle but significant SDH; please addend.",
            addendum_requested=True,
        )
    received = screens.received()
    # then the original reader — only they — hear that feedback is in (not what it says)
    [feedback] = notices(received, user_group(author.pk))
    assert feedback["kind"] == NoticeKind.REVIEW_FEEDBACK
    assert feedback["url"] == f"/qa/feedback/{adjudication.pk}/"
    assert feedback["text"].endswith("— an addendum is requested")
    assert "Subtle" not in json.dumps(feedback) and "2b" not in json.dumps(feedback)
    for group in [OPERATIONS_GROUP, DIRECTOR_GROUP, *everyone]:
        if group != user_group(author.pk):
            assert notices(received, group) == [], group
    assert [n.user for n in UserNotice.objects.order_by("pk")] == [reviewer, author]
