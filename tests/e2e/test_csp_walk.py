"""Issue 15 §9: every ReadRoom page passes its Content-Security-Policy in a real browser.

Each role of the demo cast signs in (one browser context each) on the real ASGI server — websockets
included, as in production — and walks its navigation and the detail pages those pages link to
(worklist, report editor, viewer, QA case, dossier, interfaces, message browser, rota, audit log,
facility with its charges …). The walk fails on any CSP violation Chromium reports, on any console
error or uncaught page error, and on a page that answers an error status."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.utils import timezone
from playwright.sync_api import Browser, Page

from radiology.demo import demo_load
from tests.e2e.conftest import csp_violations_watched
from tests.e2e.test_navigation import sign_in
from tests.e2e.test_worklist import AsgiServer, asgi_server, in_worker  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROLES = ("dr.neuro", "director", "ops", "mso", "admin.chicago")
# Pages the walk may follow from a navigation page, one of each shape (ids replaced by N). Downloads
# (CSV, PDF), the APIs, sign-out, OHIF's own page (tests/e2e/test_ohif.py walks it under its policy)
# and the Django admin's inner pages (its index is in the walk) are not pages to walk.
NOT_WALKED = re.compile(
    r"^/(logout|api/|dicomweb/|fhir/|fhircast/|static/|ohif/|admin/.+|live/)|\.(csv|pdf|json)$|/close/$"
)
PAGES_PER_ROLE = 20


def _shape(path: str) -> str:
    """/qa/reviews/12/ and /qa/reviews/13/ are one page to walk; so are two facilities' pages, their
    credentialing pages and their macro lists (a facility's code names it: WI-LAKEVIEW has no digit)."""
    by_facility = re.sub(r"(^|/credentialing)/facilities/[^/]+/", r"\1/facilities/F/", path)
    by_facility = re.sub(r"^/reports/macros/[^/]+/", "/reports/macros/F/", by_facility)
    return re.sub(r"/[^/]*\d[^/]*(?=/)", "/N", by_facility)


def _links(page: Page, origin: str) -> list[str]:
    hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
    paths = []
    for href in hrefs:
        parts = urlsplit(href)
        if f"{parts.scheme}://{parts.netloc}" == origin and not NOT_WALKED.search(parts.path):
            paths.append(parts.path)
    return list(dict.fromkeys(paths))


def _watched(page: Page) -> list[str]:
    """Every CSP violation, console error and uncaught error on this page, as it happens."""
    problems = csp_violations_watched(page)
    page.on(
        "console",
        lambda message: (
            problems.append(f"console error: {message.text[:300]} at {message.location.get('url', '')}")
            if message.type == "error" and "Content Security Policy" not in message.text
            else None
        ),
    )
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"[:300]))
    page.on(
        "response",
        lambda response: (
            problems.append(f"{response.request.method} {response.url} answered {response.status}")
            if response.status >= 400
            else None
        ),
    )
    return problems


def _walk(page: Page, server: AsgiServer, problems: list[str], seeds: list[str], walked: set[str]) -> None:
    """Visit the role's navigation and ``seeds``, then the pages the navigation links to — each
    shape of detail page once over all roles (``walked``): what CSP judges is the template."""
    nav = [
        urlsplit(href).path
        for href in page.get_by_role("navigation", name="Main")
        .get_by_role("link")
        .evaluate_all("links => links.map(a => a.href)")
    ]
    queue, visited = list(dict.fromkeys([*nav, *seeds])), set()
    while queue and len(visited) < PAGES_PER_ROLE:
        path = queue.pop(0)
        shape = _shape(path)
        # a navigation page links to the others: each is walked once per role, not once per link
        if path in visited or (shape in walked and path not in nav):
            continue
        walked.add(shape)
        visited.add(path)
        before = len(problems)
        response = page.goto(f"{server.url}{path}", wait_until="load")
        if response is None:
            problems.append("no response")
        page.wait_for_load_state("networkidle")
        problems[before:] = [f"{path}: {p}" for p in problems[before:]]
        if path in nav:  # one level: the pages a navigation page links to
            queue.extend(_links(page, server.url))


def _seeds() -> dict[str, list[str]]:
    """Detail pages a role reaches by its work rather than by a link on a navigation page: the
    reader's own report (editor, signed) and its images, the reader's peer-review case."""
    from django.contrib.auth import get_user_model

    from credentialing.models import RadiologistProfile
    from facilities.models import Facility
    from imaging.selectors import studies_visible_to
    from qa.models import PeerReview
    from reports.models import Report
    from worklist.models import Shift

    neuro = get_user_model().objects.get(username="dr.neuro")
    report = Report.objects.filter(author=neuro).order_by("pk").first()
    review = PeerReview.objects.filter(reviewer=neuro).order_by("pk").first()
    # on shift now, whatever the hour the suite runs (the demo's rota gives him weekday days only): the
    # images of his own report's study are then his to open
    now = timezone.now()
    Shift.objects.create(
        radiologist=neuro, starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=8)
    )
    assert studies_visible_to(neuro).filter(pk=report.study_id).exists()
    reader = [f"/studies/{report.study_id}/report/", f"/studies/{report.study_id}/viewer/"]
    if review is not None:
        reader.append(f"/qa/reviews/{review.pk}/")
    facility = Facility.objects.order_by("pk").first()
    profile = RadiologistProfile.objects.order_by("pk").first()
    return {
        "dr.neuro": reader,
        # the facility's page lists its monthly charges
        "ops": ["/operations/interfaces/messages/", f"/facilities/{facility.code}/"],
        "mso": [f"/credentialing/profiles/{profile.pk}/"],
    }


def test_every_role_walks_its_pages_without_a_csp_violation_or_console_error(
    asgi_server,  # noqa: F811
    browser: Browser,
):
    # given the demo cast and its data: studies read and waiting, reviews, dossiers, the rota
    in_worker(demo_load)
    seeds = in_worker(_seeds)
    walked: set[str] = set()
    problems: dict[str, list[str]] = {}
    for username in ROLES:
        context = browser.new_context()
        page = context.new_page()
        problems[username] = _watched(page)
        # when each role signs in and walks its pages
        sign_in(page, asgi_server, username)
        _walk(page, asgi_server, problems[username], seeds.get(username, []), walked)
        context.close()
    # then no page reported a problem
    found = [f"{user} {problem}" for user, listed in problems.items() for problem in listed]
    if found:
        pytest.fail("\n".join(found), pytrace=False)
    # and the walk reached the pages it is for, not only the navigation
    for needed in (
        "/worklist/",
        "/studies/N/report/",
        "/studies/N/viewer/",
        "/qa/reviews/N/",
        "/credentialing/me/",
        "/credentialing/profiles/N/",
        "/operations/interfaces/",
        "/operations/interfaces/messages/",
        "/operations/rota/",
        "/audit/",
        "/facilities/F/",
    ):
        assert needed in walked, (needed, sorted(walked))
