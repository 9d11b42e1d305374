"""Browser tests in Debian's Chromium through Playwright (no `playwright install`: nothing may be
downloaded here). Without Chromium they skip — except in CI, where READROOM_REQUIRE_E2E=1 makes a
missing browser a failure."""

from typing import Protocol

import pytest
from playwright.sync_api import Page, expect

from tests.browser import CHROMIUM, chromium_missing
from tests.conftest import PASSWORD, current_totp

OFFLINE_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def pytest_collection_modifyitems(config, items):
    # Required but missing never gets here: the root conftest's pytest_configure refused the run.
    missing = chromium_missing()
    if missing is None:
        return
    skip = pytest.mark.skip(reason=missing)
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": OFFLINE_FLAGS}


class Server(Protocol):
    """Django's ``live_server`` or test_worklist's uvicorn: what the browser is pointed at."""

    url: str


def sign_in(page: Page, server: Server, user) -> None:
    """Through the real login page and, for the roles that have one, the authenticator step."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    page.goto(f"{server.url}/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    device = TOTPDevice.objects.filter(user=user, confirmed=True).first()
    if device is not None:
        page.get_by_label("Code from your authenticator app").fill(current_totp(device))
        page.get_by_role("button", name="Verify").click()
    expect(page.get_by_test_id("current-user")).to_have_text(str(user))


def csp_violations_watched(page: Page) -> list[str]:
    """The Content-Security-Policy violations Chromium reports on this page (its console says
    "Refused to …" / "… violates the following Content Security Policy directive"), collected as
    they happen; the list is filled in place."""
    violations: list[str] = []

    def _seen(message) -> None:
        if "Content Security Policy" in message.text:
            violations.append(message.text[:300])

    page.on("console", _seen)
    return violations


class RequestsHeld:
    """Requests to `url` held on their way until `release()`: a test meets a race (a resync landing
    while the user types, a slice arriving after the series changed) every time, not by luck."""

    def __init__(self, page: Page, url) -> None:
        self.page = page
        self.routes: list = []
        self.holding = True
        page.route(url, self._on_request)

    def _on_request(self, route) -> None:
        if self.holding:
            self.routes.append(route)
        else:
            route.continue_()

    def wait_for_one(self, seconds: float = 5) -> None:
        for _ in range(int(seconds * 20)):
            if self.routes:
                return
            self.page.wait_for_timeout(50)
        raise AssertionError("no request was made")

    def release(self) -> None:
        self.holding = False
        for route in self.routes:
            route.continue_()
