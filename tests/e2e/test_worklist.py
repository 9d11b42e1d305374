"""The live worklist in Chromium: a code stroke routed while two readers have the worklist open
rings on the eligible neuro reader's page without a reload and never appears on the WI-only
reader's; the reader claims it with "c"; a page whose socket dropped reconnects and resyncs.

Django's ``live_server`` speaks WSGI only, so these tests serve the real ASGI application
(``radiology.asgi``: HTTP and ``/ws/worklist/``) with uvicorn in a thread of the test process, on the
test database (transactional, so both threads see committed rows). The studies are routed through
the real services in a worker thread; their events reach the server's event loop through the
channel layer of the run — Redis when REDIS_URL is set (CI), else Channels' in-memory layer, which
the server loop picks up at uvicorn's 100 ms tick."""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta

import pytest
import uvicorn
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from facilities.models import PriorityClass
from tests.conftest import PASSWORD, enrol_totp, make_radiologist
from tests.e2e.conftest import sign_in
from tests.net import free_port
from tests.worklist.conftest import make_eligible, make_study
from worklist.services import study_claim, study_route

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


class AsgiServer:
    """uvicorn serving radiology.asgi in a thread; ``restart()`` drops every socket like a deploy."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        from radiology.asgi import application

        # Static files from the source folders, as Django's own live server serves them: with
        # DATABASE_URL + REDIS_URL (CI) WhiteNoise serves only collectstatic's output.
        config = uvicorn.Config(
            ASGIStaticFilesHandler(application),
            host="127.0.0.1",
            port=self.port,
            lifespan="off",
            log_level="warning",
            # A websocket handler still waiting on the channel layer must not hold the stop for
            # ever (a loaded CI machine once took over 20 s): end the connections after 5 s.
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        if self.thread.is_alive():
            self.server.force_exit = True  # past the graceful window: uvicorn's own hard stop
            self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def asgi_server(transactional_db):
    server = AsgiServer()
    server.start()
    yield server
    server.stop()
    _server_connections_close()


def _server_connections_close() -> None:
    """The server's sync_to_async worker threads kept their database connections (Django's are
    per thread, so no other thread can close them); on PostgreSQL they would block dropping the test
    database at the end of the run. Ended from the server side once the server has stopped."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def open_worklist(page: Page, server: AsgiServer) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Worklist").click()
    expect(page.get_by_role("heading", name="Worklist")).to_be_visible()
    expect(page.get_by_test_id("live-status")).to_have_attribute("data-state", "live")


def in_worker(work, *args):
    """Run ``work`` in a thread of its own, as ingest's receivers run in the DICOM SCP's threads.
    (Not in the test's thread: Playwright's sync API keeps an event loop there, and the broadcast's
    ``async_to_sync`` refuses to run beside one.)"""
    from django.db import connection

    result = {}

    def run() -> None:
        try:
            result["value"] = work(*args)
        except BaseException as error:  # re-raised in the test's thread
            result["error"] = error
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    if "error" in result:
        raise result["error"]
    return result["value"]


def route(study) -> int:
    study_route(study_id=study.pk)
    return study.pk


def events_held(work, *args) -> list:
    """``work`` run (``in_worker``) with the study events it broadcasts held back, as a busy channel
    layer would delay them; what it sent, for ``events_release``."""
    from worklist import broadcast

    held: list = []
    send = broadcast._layer_send
    broadcast._layer_send = lambda messages, *extra: held.append((messages, extra))
    try:
        in_worker(work, *args)
    finally:
        broadcast._layer_send = send
    assert held, "the change sent no event"
    return held


def events_release(held: list) -> None:
    from worklist import broadcast

    for messages, extra in held:
        in_worker(broadcast._layer_send, messages, *extra)


def resync(page: Page) -> None:
    """The page's resync (as on unlocking the screen), waited for until its rows have answered."""
    with page.expect_response(lambda response: "/rows/" in response.url):
        page.evaluate("document.dispatchEvent(new CustomEvent('readroom:unlocked'))")


def route_stroke(facility) -> int:
    """A code-stroke head CT whose first image just arrived, routed as ingest would."""
    return in_worker(_route_stroke, facility)


def _route_stroke(facility) -> int:
    study = make_study(
        facility,
        code="70450",
        text="CT HEAD W/O CONTRAST",
        priority=PriorityClass.STROKE,
        is_stroke=True,
        first_received_at=timezone.now(),
    )
    study_route(study_id=study.pk)
    return study.pk


@pytest.fixture
def readers(dr_neuro_il, dr_msk_wi, chicago, lakeview):
    """dr_neuro_il eligible at Lakeshore (IL) now; dr_msk_wi eligible only at Lakeview (WI)."""
    make_eligible(dr_neuro_il, chicago)
    enrol_totp(dr_msk_wi)
    make_eligible(dr_msk_wi, lakeview)
    return dr_neuro_il, dr_msk_wi


def test_stroke_rings_on_the_eligible_readers_page_only_and_is_claimed_with_c(
    asgi_server, browser: Browser, page: Page, readers, chicago, lakeview
):
    neuro, msk_wi = readers
    # given the neuro reader's worklist open, and the WI reader's in another browser context
    sign_in(page, asgi_server, neuro)
    open_worklist(page, asgi_server)
    expect(page.get_by_test_id("worklist-empty")).to_be_visible()
    page.evaluate("window.__notReloaded = true")
    wi_context = browser.new_context()
    wi_page = wi_context.new_page()
    sign_in(wi_page, asgi_server, msk_wi)
    open_worklist(wi_page, asgi_server)

    # when a code stroke is routed at Lakeshore, and then an MSK study at Lakeview
    stroke_id = route_stroke(chicago)
    wi_study = make_study(
        lakeview, code="73721", text="MRI KNEE W/O CONTRAST", modalities="MR", completed_at=timezone.now()
    )
    in_worker(route, wi_study)

    # then the alert banner appears on the neuro reader's page without a reload, and it sounds
    alert = page.get_by_test_id("stroke-alert")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("CODE STROKE")
    expect(alert).to_contain_text("Lakeshore Medical Center")
    expect(alert).to_contain_text("CT HEAD W/O CONTRAST")
    expect(alert).to_have_attribute("data-sounding", "true")
    # in Lakeshore's time; a deadline past its midnight carries the day ("due Sun 6 Dec 00:04 CST")
    due = re.compile(r"^due (\w{3} \d{1,2} \w{3} )?\d\d:\d\d C[SD]T$")
    expect(alert.locator(".deadline")).to_have_text(due)
    assert page.evaluate("window.__notReloaded") is True
    row = page.locator(f'[data-testid="study-row"][data-study-id="{stroke_id}"]')
    expect(row).to_be_visible()
    expect(row.get_by_test_id("countdown")).to_have_text(re.compile(r"^\d\d:\d\d$"))
    # the browser plays the tone once the page has had a gesture (autoplay policy)
    page.get_by_role("heading", name="Worklist").click()
    expect(page.get_by_test_id("worklist")).to_have_attribute("data-beeps", re.compile(r"^[1-9]"))

    # and the WI reader's page got its own study live, but never the stroke
    expect(wi_page.locator(f'[data-testid="study-row"][data-study-id="{wi_study.pk}"]')).to_be_visible()
    expect(wi_page.locator(f'[data-study-id="{stroke_id}"]')).to_have_count(0)
    expect(wi_page.get_by_test_id("stroke-alert")).to_have_count(0)

    # when the neuro reader presses "c" on the selected (first) row
    expect(row).to_have_attribute("aria-current", "true")
    page.keyboard.press("c")  # the claim's event is sent from the server's own thread
    # then the study is theirs, and the alert stops sounding but stays until acknowledged
    expect(row.get_by_test_id("holder")).to_have_text("Yours")
    expect(alert).to_have_attribute("data-sounding", "false")
    expect(alert).to_contain_text("claimed by Dr dr_neuro_il")
    page.keyboard.press("a")
    expect(page.get_by_test_id("stroke-alert")).to_have_count(0)
    wi_page.wait_for_timeout(300)
    expect(wi_page.locator(f'[data-study-id="{stroke_id}"]')).to_have_count(0)
    wi_context.close()


def test_acknowledging_stops_the_alert_and_shortcuts_are_listed(asgi_server, page: Page, readers, chicago):
    neuro, _ = readers
    sign_in(page, asgi_server, neuro)
    open_worklist(page, asgi_server)
    stroke_id = route_stroke(chicago)
    alert = page.get_by_test_id("stroke-alert")
    expect(alert).to_have_attribute("data-sounding", "true")
    # "a" acknowledges: the banner and its sound go; the unclaimed row stays to be claimed
    page.keyboard.press("a")
    expect(alert).to_have_count(0)
    expect(page.get_by_test_id("study-row")).to_have_count(1)
    # and it is recorded on the server (who, when), so the reader's other pages and windows agree
    _acknowledgement_recorded(neuro, stroke_id)
    # a reload does not ring again for an acknowledged study
    page.reload()
    expect(page.get_by_test_id("study-row")).to_have_count(1)
    expect(page.get_by_test_id("stroke-alert")).to_have_count(0)
    # "?" lists the shortcuts, Escape closes; "f" goes to the filters
    page.keyboard.press("?")
    expect(page.get_by_test_id("help-overlay")).to_be_visible()
    expect(page.get_by_test_id("help-overlay")).to_contain_text("claim the selected study")
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("help-overlay")).to_be_hidden()
    page.keyboard.press("f")
    expect(page.get_by_label("Facility")).to_be_focused()


def _acknowledgement_recorded(user, study_id: int) -> None:
    import time

    from worklist.models import AlertAcknowledgement

    deadline = time.monotonic() + 5
    while not AlertAcknowledgement.objects.filter(user=user, study_id=study_id).exists():
        assert time.monotonic() < deadline, "the worklist's acknowledgement was not recorded"
        time.sleep(0.1)


def test_a_dropped_socket_reconnects_and_resyncs(asgi_server, page: Page, readers, chicago):
    neuro, _ = readers
    # given the neuro reader's worklist, live
    sign_in(page, asgi_server, neuro)
    open_worklist(page, asgi_server)
    page.evaluate("window.__notReloaded = true")
    status = page.get_by_test_id("live-status")

    # when the server goes away (every socket drops), a study is routed meanwhile, and it comes back
    asgi_server.stop()
    expect(status).to_have_attribute("data-state", "offline")
    expect(status).to_contain_text("reconnecting")
    missed = make_study(chicago, code="70450", text="CT HEAD W/O CONTRAST", completed_at=timezone.now())
    in_worker(route, missed)  # no socket is open to hear this one
    asgi_server.start()

    # then the page reconnects by itself and re-fetches: the missed study is there, no reload
    expect(status).to_have_attribute("data-state", "live", timeout=15_000)
    expect(page.locator(f'[data-testid="study-row"][data-study-id="{missed.pk}"]')).to_be_visible()
    assert page.evaluate("window.__notReloaded") is True


def test_a_refused_claim_shows_the_servers_reason_in_the_row(asgi_server, page: Page, readers, chicago):
    from datetime import timedelta

    from worklist.models import Shift, StudyAssignment

    neuro, _ = readers
    # given a head CT on the neuro reader's open worklist
    study = make_study(chicago, code="70450", text="CT HEAD W/O CONTRAST", completed_at=timezone.now())
    in_worker(route, study)
    sign_in(page, asgi_server, neuro)
    open_worklist(page, asgi_server)
    row = page.locator(f'[data-testid="study-row"][data-study-id="{study.pk}"]')
    expect(row).to_be_visible()
    # when the reader's shift has ended (no study changed, so no event) and they press "c"
    Shift.objects.filter(radiologist=neuro).update(ends_at=timezone.now() - timedelta(seconds=1))
    page.keyboard.press("c")
    # then the page says why, in the eligibility engine's words (in the row too, until the next
    # refresh takes the row away: the reader may no longer read it), and nobody holds the study
    notice = page.get_by_test_id("worklist-notice")
    expect(notice).to_contain_text(
        f"{study.accession_number}: Not eligible to read this study. Not on shift at"
    )
    assert StudyAssignment.objects.get(study=study).claimed_by_id is None


def test_operations_page_shows_a_new_study_nobody_may_read_live(asgi_server, page: Page, ops_omar, lakeview):
    # given the operations desk's worklist open, and no reader who may read at Lakeview
    page.goto(f"{asgi_server.url}/login/")
    page.get_by_label("Username").fill("ops_omar")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Worklist").click()
    expect(page.get_by_role("heading", name="Operations worklist")).to_be_visible()
    expect(page.get_by_test_id("live-status")).to_have_attribute("data-state", "live")
    # when a code stroke arrives at Lakeview
    stroke_id = route_stroke(lakeview)
    # then its row appears without a reload, saying nobody is eligible — and the desk gets no banner
    row = page.locator(f'[data-testid="study-row"][data-study-id="{stroke_id}"]')
    expect(row.get_by_test_id("coverage-gap")).to_contain_text("nobody eligible")
    expect(page.get_by_test_id("stroke-alert")).to_have_count(0)


def test_an_event_the_pages_resync_already_holds_is_not_counted_twice(
    asgi_server, page: Page, readers, chicago
):
    """A resync answered between a change's commit and its event holds the change already; the
    event then finds its row on the page and must not count it again (CI, 2026-12-06: 3 for 2)."""
    neuro, _ = readers
    first = make_study(chicago, code="70450", text="CT HEAD W/O CONTRAST", completed_at=timezone.now())
    in_worker(route, first)
    sign_in(page, asgi_server, neuro)
    with page.expect_response(lambda response: "/worklist/rows/" in response.url):
        open_worklist(page, asgi_server)
    priority = page.get_by_test_id("study-row").first.get_attribute("data-priority")
    count = page.get_by_test_id("counts").locator(f'[data-priority="{priority}"] b')
    before = int(count.inner_text())
    # given a second study routed whose event is held back, as a busy channel layer would
    second = make_study(chicago, code="70450", text="CT HEAD W/O CONTRAST", completed_at=timezone.now())
    held = events_held(route, second)
    # and a resync that answers with it (the row and its count)
    resync(page)
    expect(page.locator(f'[data-testid="study-row"][data-study-id="{second.pk}"]')).to_be_visible()
    expect(count).to_have_text(str(before + 1))
    applied = int(page.get_by_test_id("worklist").get_attribute("data-applied") or 0)
    # when the event arrives after all
    events_release(held)
    # then it is applied (the row in place) and the study is counted once
    expect(page.get_by_test_id("worklist")).to_have_attribute("data-applied", str(applied + 1))
    expect(page.locator(f'[data-testid="study-row"][data-study-id="{second.pk}"]')).to_have_count(1)
    expect(count).to_have_text(str(before + 1))


def test_a_removal_the_pages_resync_already_holds_is_not_counted_twice(
    asgi_server, page: Page, readers, chicago, monkeypatch
):
    """The same race for a study the page does not show (on its next page): a resync answered
    between a claim's commit and its event has counted the claim already, so the event must not
    take the study off the count again. Told apart by the resync's snapshot and the event's
    transaction id (radiology/visibility.py); an event after the resync still counts."""
    from django.db import connection

    from worklist import views

    if connection.vendor != "postgresql":
        pytest.skip("snapshots are PostgreSQL's (radiology/visibility.py)")
    neuro, _ = readers
    monkeypatch.setattr(views, "READER_PAGE_SIZE", 2)  # pages of two rows: the third is not shown
    now = timezone.now()
    studies = [
        make_study(chicago, code="70450", text="CT HEAD", completed_at=now - timedelta(minutes=9 - n))
        for n in range(3)
    ]
    for study in studies:
        in_worker(route, study)
    other = make_radiologist("neuro_two", "neuro")
    make_eligible(other, chicago)
    sign_in(page, asgi_server, neuro)
    with page.expect_response(lambda response: "/worklist/rows/" in response.url):
        open_worklist(page, asgi_server)
    expect(page.get_by_test_id("study-row")).to_have_count(2)
    priority = page.get_by_test_id("study-row").first.get_attribute("data-priority")
    count = page.get_by_test_id("counts").locator(f'[data-priority="{priority}"] b')
    expect(count).to_have_text("3")
    assert page.get_by_test_id("worklist").locator("#worklist-live").get_attribute("data-snapshot")
    # given the study on the next page claimed by someone else, its event held back
    held = events_held(lambda: study_claim(study_id=studies[2].pk, user=other, at=timezone.now()))
    # and a resync that answers without it
    resync(page)
    expect(count).to_have_text("2")
    applied = int(page.get_by_test_id("worklist").get_attribute("data-applied") or 0)
    # when the event arrives after all, then the study is not taken off the count again
    events_release(held)
    expect(page.get_by_test_id("worklist")).to_have_attribute("data-applied", str(applied + 1))
    expect(count).to_have_text("2")
    # and a study routed and claimed after the resync (not shown either) is counted and uncounted
    fourth = make_study(chicago, code="70450", text="CT HEAD", completed_at=now)
    in_worker(route, fourth)
    expect(count).to_have_text("3")
    in_worker(lambda: study_claim(study_id=fourth.pk, user=other, at=timezone.now()))
    expect(count).to_have_text("2")
    expect(page.get_by_test_id("study-row")).to_have_count(2)


def test_events_are_applied_from_the_socket_without_refetching_the_rows(
    asgi_server, page: Page, readers, chicago
):
    neuro, _ = readers
    # given two head CTs on the neuro reader's open worklist, and a record of every rows fetch
    first = make_study(chicago, code="70450", text="CT HEAD W/O CONTRAST", completed_at=timezone.now())
    in_worker(route, first)
    sign_in(page, asgi_server, neuro)
    fetched = []
    page.on(
        "request", lambda request: fetched.append(request.url) if "/worklist/rows/" in request.url else None
    )
    with page.expect_response(lambda response: "/worklist/rows/" in response.url):
        open_worklist(page, asgi_server)  # and the resync the socket's opening asks for, answered
    expect(page.get_by_test_id("study-row")).to_have_count(1)
    fetched.clear()
    priority = page.get_by_test_id("study-row").first.get_attribute("data-priority")
    routine = page.get_by_test_id("counts").locator(f'[data-priority="{priority}"] b')
    before = int(routine.inner_text())
    # when a second study is routed, and then someone else claims the first
    second = make_study(chicago, code="70450", text="CT HEAD W/O CONTRAST", completed_at=timezone.now())
    in_worker(route, second)
    expect(page.locator(f'[data-testid="study-row"][data-study-id="{second.pk}"]')).to_be_visible()
    expect(routine).to_have_text(str(before + 1))
    other = make_radiologist("neuro_two", "neuro")
    make_eligible(other, chicago)
    in_worker(lambda: study_claim(study_id=first.pk, user=other, at=timezone.now()))
    # then the page applied both from the socket: the new row in place, the claimed one gone, the
    # counts kept — and it never asked the server for its rows
    expect(page.locator(f'[data-testid="study-row"][data-study-id="{first.pk}"]')).to_have_count(0)
    expect(routine).to_have_text(str(before))
    assert page.evaluate("Number(document.querySelector('[data-testid=worklist]').dataset.applied)") >= 2
    assert fetched == []


def test_an_operations_page_does_not_count_twice_a_study_its_resync_already_holds(
    asgi_server, page: Page, readers, ops_omar, chicago, monkeypatch
):
    """The race of the reader's page, on the operations desk's: a study routed onto its next page
    whose event comes after a resync that counted it. The desk's counts carry their snapshot too
    (worklist.selectors.worklist_counts_seen), so the late event does not count the study again;
    one after the resync still counts."""
    from django.db import connection

    from worklist import views

    if connection.vendor != "postgresql":
        pytest.skip("snapshots are PostgreSQL's (radiology/visibility.py)")
    monkeypatch.setattr(views, "OPERATIONS_PAGE_SIZE", 2)  # pages of two rows: a third is not shown
    now = timezone.now()
    for n in range(2):
        in_worker(
            route,
            make_study(chicago, code="70450", text="CT HEAD", completed_at=now - timedelta(minutes=9 - n)),
        )
    sign_in(page, asgi_server, ops_omar)
    with page.expect_response(lambda response: "/rows/" in response.url):
        page.goto(f"{asgi_server.url}/operations/worklist/")
    expect(page.get_by_test_id("study-row")).to_have_count(2)
    priority = page.get_by_test_id("study-row").first.get_attribute("data-priority")
    count = page.get_by_test_id("counts").locator(f'[data-priority="{priority}"] b')
    expect(count).to_have_text("2")
    assert page.locator("#worklist-live").get_attribute("data-snapshot")
    # given a third study routed (after the two in reading order: on the next page), its event held
    held = events_held(route, make_study(chicago, code="70450", text="CT HEAD", completed_at=now))
    # and a resync that counts it
    resync(page)
    expect(count).to_have_text("3")
    applied = int(page.get_by_test_id("worklist").get_attribute("data-applied") or 0)
    # when the event arrives after all, then the study is not counted again
    events_release(held)
    expect(page.get_by_test_id("worklist")).to_have_attribute("data-applied", str(applied + 1))
    expect(count).to_have_text("3")
    # and a study routed after the resync is counted
    in_worker(
        route, make_study(chicago, code="70450", text="CT HEAD", completed_at=now + timedelta(minutes=1))
    )
    expect(count).to_have_text("4")
    expect(page.get_by_test_id("study-row")).to_have_count(2)
