"""Which Chromium the browser tests drive, and whether this run must have it.

Kept apart from tests/e2e/conftest.py because the root conftest checks it before any worker starts
(a ``UsageError`` raised while an xdist worker collects reaches the terminal as an INTERNALERROR
traceback from inside the worker, not as the one line that says what to install)."""

import os
import shutil

CHROMIUM = os.environ.get("READROOM_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")


def chromium_required() -> bool:
    """CI sets READROOM_REQUIRE_E2E=1: a missing browser must fail the run, never skip its tests."""
    return os.environ.get("READROOM_REQUIRE_E2E") == "1"


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if os.path.exists(CHROMIUM):
        return None
    return f"no Chromium at {CHROMIUM}; `apt-get install chromium` (or set READROOM_CHROMIUM)"
