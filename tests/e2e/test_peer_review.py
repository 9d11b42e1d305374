"""Peer review in Chromium, through the real pages: the assigned reviewer opens the blinded case
(the reader's name nowhere in the page), records a first impression and scores RADPEER 3b with a
comment; the medical director finds it in the adjudication queue, changes the score and writes
feedback; the original reader reads the feedback, which does not name the reviewer. Anyone else who
opens the case's address is refused.

The case is ``referred`` (tests/qa/conftest.py): dr_white's signed head CT at Lakeshore, whose text
names her in a signature line and by her initials, referred by the director and assigned to a
colleague."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from qa.models import Adjudication, PeerReview, ReviewStatus
from tests.e2e.conftest import sign_in
from tests.qa.conftest import head_ct_read, neuro_readers, referred  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def assert_nowhere_in_page(page: Page, person) -> None:
    """Not in the HTML at all — text, attributes, hidden inputs: names, username, initials."""
    html = page.content()
    for trace in filter(None, (person.first_name, person.last_name, person.username, person.display_name)):
        assert trace not in html, f"{trace!r} in {page.url}"
    # initials as a word of their own ("JW", "J.W.", "J. W."); inside a CSRF token they are not
    initials = r"\.?\s?".join((person.first_name[0], person.last_name[0]))
    assert not re.search(rf"\b{initials}\b", html), f"initials of {person.username} in {page.url}"


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to ReadRoom")).to_be_visible()


def test_blinded_review_adjudication_and_feedback(
    live_server,
    page: Page,
    referred,  # noqa: F811 (the fixtures imported above)
    neuro_readers,  # noqa: F811
    director_dana,
):
    author, reviewer = neuro_readers[0], referred.reviewer
    nav = page.get_by_role("navigation", name="Main")

    # given the reviewer signed in with both factors, on their peer-review list
    sign_in(page, live_server, reviewer)
    nav.get_by_role("link", name="Peer review").click()
    cases = page.get_by_test_id("reviews")
    expect(cases).to_contain_text("Lakeshore Medical Center")
    assert_nowhere_in_page(page, author)

    # when they open the case: the images' link and the blind step, not yet the report
    cases.get_by_role("link", name=f"Case {referred.pk}").click()
    expect(page.get_by_role("heading", name=f"Peer review case {referred.pk}")).to_be_visible()
    expect(page.get_by_role("link", name="Open the images")).to_be_visible()
    expect(page.get_by_test_id("blind-step")).to_be_visible()
    expect(page.get_by_test_id("original-report")).to_have_count(0)
    assert_nowhere_in_page(page, author)

    # they record a first impression; the report is shown with its reader removed
    page.get_by_label("Impression").fill("Thin left convexity subdural hematoma.")
    page.get_by_role("button", name="Record and show the report").click()
    report = page.get_by_test_id("original-report")
    expect(report).to_contain_text("No hemorrhage.")
    expect(report).to_contain_text("Dr. Patel")  # a colleague named in the text stays
    expect(report).not_to_contain_text("Electronically signed")
    assert_nowhere_in_page(page, author)

    # they score 3b: without a comment the server says what is missing, with one it is recorded
    page.get_by_role("radio", name=re.compile(r"^3b —")).check()
    page.get_by_role("button", name="Record score").click()
    expect(page.get_by_text("Score 3b needs a comment")).to_be_visible()
    page.get_by_role("radio", name=re.compile(r"^3b —")).check()
    page.get_by_label(re.compile(r"^Comment")).fill("Missed a 4 mm left subdural hematoma.")
    page.get_by_role("button", name="Record score").click()
    expect(page.get_by_text("Score recorded. Thank you.")).to_be_visible()
    expect(page.get_by_test_id("reviews-empty")).to_be_visible()
    assert PeerReview.objects.get(pk=referred.pk).status == ReviewStatus.ADJUDICATION
    sign_out(page)

    # when the medical director signs in and opens the adjudication queue
    sign_in(page, live_server, director_dana)
    nav.get_by_role("link", name="Adjudication").click()
    queue = page.get_by_test_id("adjudication-queue")
    row = queue.get_by_role("row").filter(has=page.get_by_role("link", name=f"Case {referred.pk}"))
    expect(row).to_contain_text("3b")
    row.get_by_role("link", name=f"Case {referred.pk}").click()
    # they see both reads, named, with the reviewer's score preselected
    expect(page.get_by_role("heading", name=f"Adjudicate case {referred.pk}")).to_be_visible()
    expect(page.get_by_text("Missed a 4 mm left subdural hematoma.")).to_be_visible()
    expect(page.get_by_role("heading", name=f"Original read — {author}")).to_be_visible()
    expect(page.get_by_label("Final score")).to_have_value("3b")
    # they change it to 3a, write feedback and ask for an addendum
    page.get_by_label("Final score").select_option("3a")
    page.get_by_label(re.compile(r"^Feedback to the reader")).fill(
        "Subtle but real left SDH on the thin slices; please addend."
    )
    page.get_by_label("Ask the reader for an addendum").check()
    # styled forms (issue 19): the text area is the theme's field, not a white unstyled box …
    field, body = page.get_by_label(re.compile(r"^Feedback to the reader")).evaluate(
        "e => [e, document.body].map((n) => [getComputedStyle(n).backgroundColor, getComputedStyle(n).color])"
    )
    assert field == body, (field, body)  # the page's background and text colour (app.css), not the UA's
    # … and the addendum checkbox sits at the start of its own label's line, not across the page from it
    box = page.get_by_label("Ask the reader for an addendum").bounding_box()
    label = page.locator("label", has_text="Ask the reader for an addendum").bounding_box()
    assert box["width"] < 30 and abs(box["x"] - label["x"]) < 10, (box, label)
    assert label["y"] <= box["y"] + box["height"] / 2 <= label["y"] + label["height"], (box, label)
    page.get_by_role("button", name="Record decision").click()
    expect(page.get_by_text("Adjudication recorded; the reader sees your feedback.")).to_be_visible()
    expect(page.get_by_text("Nothing to adjudicate.")).to_be_visible()
    sign_out(page)

    # then the original reader finds the feedback, new, under Peer review
    sign_in(page, live_server, author)
    # the live channel tells them first (a notice to them alone, which stays until acknowledged); it
    # pushes the navigation down rather than covering it, so they click Peer review while it shows
    live = page.get_by_test_id("live-channel")
    expect(live.get_by_text("PEER-REVIEW FEEDBACK FOR YOU").first).to_be_visible()
    nav_link = page.get_by_role("navigation", name="Main").get_by_role("link", name="Peer review")
    banner_box, link_box = live.bounding_box(), nav_link.bounding_box()
    assert link_box["y"] >= banner_box["y"] + banner_box["height"]  # below the banner, not under it
    nav_link.click()
    expect(page).to_have_url(re.compile(r"/qa/reviews/$"))
    feedback = page.get_by_test_id("feedback")
    expect(feedback).to_contain_text("RADPEER 3a")
    expect(feedback).to_contain_text("new")
    feedback.get_by_role("link").click()
    # the director's score and words, the addendum request — and not who reviewed it
    detail = page.get_by_test_id("feedback-detail")
    expect(detail).to_contain_text("RADPEER 3a")
    expect(detail).to_contain_text("Subtle but real left SDH on the thin slices; please addend.")
    expect(detail).to_contain_text("asks you to add an addendum")
    assert_nowhere_in_page(page, reviewer)
    adjudication = Adjudication.objects.get(review=referred)
    assert adjudication.final_score == "3a" and adjudication.feedback_seen_at is not None
    assert page.url == f"{live_server.url}/qa/feedback/{adjudication.pk}/"


def test_the_case_is_refused_to_anyone_but_its_reviewer(
    live_server,
    page: Page,
    referred,  # noqa: F811
    neuro_readers,  # noqa: F811
    admin_chicago,
):
    author = neuro_readers[0]
    other_reader = next(r for r in neuro_readers[1:] if r != referred.reviewer)
    # a facility admin of the case's own facility: not a reader, refused at the door
    sign_in(page, live_server, admin_chicago)
    response = page.goto(f"{live_server.url}/qa/reviews/{referred.pk}/")
    assert response.status == 403
    expect(page.get_by_role("alert")).to_contain_text("Peer review cases are for radiologists.")
    assert_nowhere_in_page(page, author)
    page.get_by_role("button", name="Sign out").click()
    # a neuro reader at the same facility, not the one assigned: refused the case
    sign_in(page, live_server, other_reader)
    response = page.goto(f"{live_server.url}/qa/reviews/{referred.pk}/")
    assert response.status == 403
    expect(page.get_by_role("alert")).to_contain_text("This review is not assigned to you.")
    expect(page.get_by_test_id("original-report")).to_have_count(0)
    assert_nowhere_in_page(page, author)
