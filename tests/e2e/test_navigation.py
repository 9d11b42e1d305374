"""Each role signs in through the real pages in Chromium and sees its own navigation — and not the
other roles' pages."""

import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import Browser, Page, expect

from accounts.roles import Role
from radiology.demo import DEMO_PASSWORD, demo_load
from tests.conftest import current_totp

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# username → (navigation the role sees, navigation it must not see)
EXPECTED = {
    "dr.neuro": (
        {"Home", "My dossier"},
        {"Facilities", "Audit log", "Administration", "Credentialing", "Readers"},
    ),
    "director": (
        {"Home", "Facilities", "Audit log", "Credentialing"},
        {"Administration", "My dossier", "Readers"},
    ),
    "mso": (
        {"Home", "Credentialing", "Facilities", "Administration"},
        {"Audit log", "My dossier", "Readers"},
    ),
    "admin.chicago": (
        {"Home", "Readers", "Facilities", "Administration"},
        {"Audit log", "My dossier", "Credentialing"},
    ),
    "ops": (
        {"Home", "Credentialing", "Facilities", "Audit log", "Administration", "Rota", "Coverage"},
        {"My dossier", "Readers"},
    ),
}
SIGNING = {"dr.neuro", "director"}


def sign_in(page: Page, live_server, username: str) -> None:
    """Through the real login page; roles that sign confirm with their authenticator code."""
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    if username in SIGNING:
        expect(page.get_by_role("heading", name="Enter your authenticator code")).to_be_visible()
        # no menu until the second factor is passed
        expect(page.get_by_role("navigation", name="Main").get_by_role("link")).to_have_count(0)
        device = TOTPDevice.objects.get(user__username=username)
        page.get_by_label("Code from your authenticator app").fill(current_totp(device))
        page.get_by_role("button", name="Verify").click()
    # signed in once the menu shows: a caller that reads the menu straight after the click would
    # otherwise read the login or code page's empty one
    expect(page.get_by_role("navigation", name="Main").get_by_role("link").first).to_be_visible()


def test_each_role_signs_in_and_sees_its_navigation(live_server, browser: Browser):
    # given the demo cast (loaded once: the load is most of this test's time, and the five roles
    # only read it), each of them signed in in a browser context of their own
    demo_load()
    for username, (shown, hidden) in EXPECTED.items():
        context = browser.new_context()
        page = context.new_page()
        sign_in(page, live_server, username)
        # then the navigation is the role's own
        nav = page.get_by_role("navigation", name="Main")
        expect(nav).to_be_visible()
        labels = set(nav.get_by_role("link").all_inner_texts())
        assert shown <= labels, (username, labels)
        assert not (hidden & labels), (username, labels)
        # reading-room roles get the dark theme
        theme = page.locator("html").get_attribute("data-theme")
        assert theme == ("dark" if username in SIGNING else "light"), username
        context.close()


def test_facility_admin_only_finds_own_facility_in_the_pages(
    live_server, page: Page, admin_chicago, lakeview
):
    # the cast's admin of Lakeshore (Chicago) only, with Lakeview beside it (a demo load is ~9 s of CPU)
    from tests.e2e.conftest import sign_in as sign_in_user

    sign_in_user(page, live_server, admin_chicago)
    page.get_by_role("link", name="Facilities").click()
    table = page.get_by_test_id("facility-table")
    expect(table).to_contain_text("Lakeshore Medical Center")
    expect(table).not_to_contain_text("Lakeview")
    response = page.goto(f"{live_server.url}/facilities/WI-LAKEVIEW/")
    assert response.status == 404


def test_signed_out_after_sign_out(live_server, page: Page, ops_omar):
    from tests.e2e.conftest import sign_in as sign_in_user

    sign_in_user(page, live_server, ops_omar)
    expect(page.get_by_test_id("roles")).to_have_text(Role.OPERATIONS.value)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to ReadRoom")).to_be_visible()


def test_the_operations_navigation_fits_one_line_at_1600_px(live_server, page: Page, ops_omar, chicago):
    from tests.e2e.conftest import sign_in as sign_in_user

    # given operations (the longest menu, with Administration) on a 1600-px screen
    page.set_viewport_size({"width": 1600, "height": 900})
    sign_in_user(page, live_server, ops_omar)
    links = page.get_by_role("navigation", name="Main").get_by_role("link")
    assert links.count() >= 11
    # then every entry sits on the same line, and the header is one line tall
    tops = {round(box["y"]) for box in (links.nth(i).bounding_box() for i in range(links.count()))}
    assert len(tops) == 1, tops
    assert page.locator("header.shell").bounding_box()["height"] < 60
    # and the facility page links to its charges CSV, this month first
    page.goto(f"{live_server.url}/facilities/{chicago.code}/")
    charges = page.get_by_test_id("charges").get_by_role("link")
    expect(charges).to_have_count(3)
    assert charges.first.get_attribute("href").startswith(f"/reports/charges/{chicago.code}/")
