"""The peer-review pages: the reviewer's page never names the author; the reader's feedback never
names the reviewer; nobody else opens either; only the director adjudicates."""

import re
from http.cookies import SimpleCookie

import pytest

from qa.models import Adjudication, PeerReview, ReviewStatus
from qa.services import adjudication_decide, peer_review_score

pytestmark = pytest.mark.django_db


def test_reviewer_page_is_blinded_then_scores(verified_client, referred, neuro_readers):
    author = neuro_readers[0]
    client = verified_client(referred.reviewer)
    # given the blind step: no report yet
    page = client.get(f"/qa/reviews/{referred.pk}/").content.decode()
    assert 'data-testid="blind-step"' in page and "No hemorrhage" not in page
    # when the reviewer records a first impression, the redacted report is shown
    client.post(f"/qa/reviews/{referred.pk}/impression/", {"impression": "Left SDH"})
    page = client.get(f"/qa/reviews/{referred.pk}/").content.decode()
    assert "No hemorrhage." in page
    for trace in ("White", "Jane", author.username):
        assert trace not in page
    # her initials as a word of their own: the page's random CSRF token may hold "JW" by chance
    assert not re.search(r"\bJ\.?\s?W\b", page)
    # the images open for the reviewer, though off the worklist
    assert client.get(f"/studies/{referred.report.study_id}/viewer/").status_code == 200
    # a 3b without comment is refused with the reason, with one it goes to the director
    response = client.post(f"/qa/reviews/{referred.pk}/score/", {"score": "3b", "comment": ""}, follow=True)
    assert "needs a comment" in response.content.decode()
    client.post(f"/qa/reviews/{referred.pk}/score/", {"score": "3b", "comment": "Missed SDH"})
    assert PeerReview.objects.get(pk=referred.pk).status == ReviewStatus.ADJUDICATION


def test_author_and_other_readers_cannot_open_the_case(verified_client, referred, neuro_readers, client):
    others = [r for r in neuro_readers if r != referred.reviewer]
    for reader in others:
        assert verified_client(reader).get(f"/qa/reviews/{referred.pk}/").status_code == 403
        client.logout()


def test_only_the_director_adjudicates_and_feedback_hides_the_reviewer(
    verified_client, client, referred, director_dana, neuro_readers, admin_chicago, ops_omar
):
    peer_review_score(review_id=referred.pk, user=referred.reviewer, score="3a", comment="Missed SDH")
    reviewer_client = verified_client(referred.reviewer)
    assert reviewer_client.get("/qa/adjudication/").status_code == 403
    # keep the reviewer's session for the end (a TOTP code verifies once per 30 s window)
    reviewer_session = reviewer_client.cookies
    client.cookies = SimpleCookie()
    # others are refused the queue
    for user in (admin_chicago, ops_omar):
        client.force_login(user)
        assert client.get("/qa/adjudication/").status_code == 403
        assert client.get(f"/qa/adjudication/{referred.pk}/").status_code == 403
    # the director decides
    director = verified_client(director_dana)
    assert "Missed SDH" in director.get(f"/qa/adjudication/{referred.pk}/").content.decode()
    director.post(
        f"/qa/adjudication/{referred.pk}/",
        {"final_score": "2b", "feedback": "Subtle SDH — please addend.", "addendum_requested": "on"},
    )
    adjudication = Adjudication.objects.get(review=referred)
    assert adjudication.final_score == "2b" and adjudication.addendum_requested
    client.logout()
    # the author reads the feedback; the reviewer is not named anywhere on it
    author = verified_client(neuro_readers[0])
    page = author.get(f"/qa/feedback/{adjudication.pk}/").content.decode()
    assert "Subtle SDH" in page and "addendum" in page
    reviewer = referred.reviewer
    for trace in (reviewer.last_name, reviewer.first_name, reviewer.username):
        assert trace not in page
    # the reviewer cannot read the author's feedback
    from django.test import Client

    reviewer_again = Client()
    reviewer_again.cookies = reviewer_session
    assert reviewer_again.get(f"/qa/feedback/{adjudication.pk}/").status_code == 404


def test_api_responses_are_blinded_and_score_rules_hold(verified_client, referred, neuro_readers, client):
    author = neuro_readers[0]
    api = verified_client(referred.reviewer)
    listing = api.get("/api/v1/qa/reviews/")
    detail = api.get(f"/api/v1/qa/reviews/{referred.pk}/?reveal=1")
    assert listing.status_code == detail.status_code == 200
    assert [c["review_id"] for c in listing.json()] == [referred.pk]
    assert "No hemorrhage." in detail.json()["report_text"]
    for body in (listing.content.decode(), detail.content.decode()):
        for trace in ("White", "Jane", author.username, '"original_reader"', '"signed_by"'):
            assert trace not in body
    refused = api.post(
        f"/api/v1/qa/reviews/{referred.pk}/score/", {"score": "2b"}, content_type="application/json"
    )
    assert refused.status_code == 400 and "needs a comment" in refused.json()["detail"]
    scored = api.post(
        f"/api/v1/qa/reviews/{referred.pk}/score/",
        {"score": "1", "comment": ""},
        content_type="application/json",
    )
    assert scored.status_code == 200 and scored.json()["status"] == "scored"
    client.cookies = SimpleCookie()
    other = verified_client(neuro_readers[2] if referred.reviewer == neuro_readers[1] else neuro_readers[1])
    assert other.get(f"/api/v1/qa/reviews/{referred.pk}/").status_code == 403


def test_the_reviewers_worklist_shows_waiting_reviews_at_its_foot(verified_client, referred):
    page = verified_client(referred.reviewer).get("/worklist/rows/").content.decode()
    assert 'data-testid="peer-reviews"' in page and "1 case waiting for your review" in page


def test_queue_and_feedback_show_times_in_the_facility_zone(
    verified_client, referred, director_dana, neuro_readers
):
    # given a significant discrepancy on a read at Lakeshore (America/Chicago)
    review = peer_review_score(
        review_id=referred.pk, user=referred.reviewer, score="3a", comment="Missed SDH"
    )
    chicago_time = "%Y-%m-%d %H:%M %Z"
    zone = review.report.study.facility.zone
    # when the director opens the queue and the reader the feedback
    queue = verified_client(director_dana).get("/qa/adjudication/").content.decode()
    adjudication = adjudication_decide(
        review_id=review.pk, director=director_dana, final_score="2b", feedback="Subtle SDH."
    )
    page = verified_client(neuro_readers[0]).get(f"/qa/feedback/{adjudication.pk}/").content.decode()
    # then both times are Chicago's, named as such
    assert review.scored_at.astimezone(zone).strftime(chicago_time) in queue
    assert review.report.signed_at.astimezone(zone).strftime(chicago_time) in page
