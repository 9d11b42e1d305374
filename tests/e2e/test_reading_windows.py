"""Two windows kept in step (issue 14, docs/alerts.md): the reader opens the images from the report
editor into the viewer window (a second monitor); when the editor moves to their next study — Sign &
next, or any editor they open — the viewer window follows by itself, and the editor's keyboard path
still works. The choice is remembered: a later editor page keeps the window in step too."""

from __future__ import annotations

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from tests.e2e.conftest import sign_in
from tests.e2e.test_worklist import asgi_server, in_worker  # noqa: F401
from tests.reports.conftest import ct_head_template, head_ct_study  # noqa: F401
from tests.worklist.conftest import neuro_reader  # noqa: F401
from worklist.services import study_claim

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_the_viewer_window_follows_the_editor_to_the_next_study(
    asgi_server,  # noqa: F811
    page: Page,
    neuro_reader,  # noqa: F811
    chicago,
    ct_head_template,  # noqa: F811
):
    # given the reader holding two head CTs, in the editor of the first
    first, second = (in_worker(head_ct_study, chicago) for _ in range(2))
    for study in (first, second):
        in_worker(lambda s=study: study_claim(study_id=s.pk, user=neuro_reader, at=timezone.now()))
    sign_in(page, asgi_server, neuro_reader)
    page.goto(f"{asgi_server.url}/studies/{first.pk}/report/")
    # when they open the images in the viewer window (the basic viewer here)
    with page.expect_popup() as opened:
        page.get_by_test_id("basic-viewer-link").click()
    viewer = opened.value
    expect(viewer).to_have_url(f"{asgi_server.url}/studies/{first.pk}/viewer/")
    assert viewer.evaluate("window.name") == "readroom-viewer"
    # and the editor moves on to their other study
    page.goto(f"{asgi_server.url}/studies/{second.pk}/report/")
    # then the viewer window follows by itself
    expect(viewer).to_have_url(f"{asgi_server.url}/studies/{second.pk}/viewer/", timeout=10_000)
    # and the editor's keyboard path is intact: ? shows the shortcuts, Ctrl+Enter the sign dialog
    page.get_by_label("Findings").click()
    page.keyboard.press("Control+Enter")
    expect(page.locator("#sign-dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#sign-dialog")).to_be_hidden()
    # and the same editor again tells the viewer nothing new (already in step: no reload loop)
    page.reload()
    page.wait_for_timeout(500)
    expect(viewer).to_have_url(f"{asgi_server.url}/studies/{second.pk}/viewer/")
