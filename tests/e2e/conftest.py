"""Browser tests in Debian's Chromium through Playwright (no `playwright install`: nothing may be
downloaded here). Without Chromium they skip — except in CI, where READROOM_REQUIRE_E2E=1 makes a
missing browser a failure."""

import os
import shutil

import pytest

CHROMIUM = os.environ.get("READROOM_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
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
    if os.path.exists(CHROMIUM):
        return
    if os.environ.get("READROOM_REQUIRE_E2E") == "1":
        raise pytest.UsageError(
            f"READROOM_REQUIRE_E2E=1 but no Chromium at {CHROMIUM} (apt-get install chromium)"
        )
    skip = pytest.mark.skip(
        reason=f"no Chromium at {CHROMIUM}; `apt-get install chromium` to run browser tests"
    )
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": OFFLINE_FLAGS}
