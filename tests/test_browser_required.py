"""A CI run without its browser says so in one line, before any worker starts (tests/browser.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_a_required_browser_that_is_missing_stops_the_run_with_one_clear_line(tmp_path):
    env = {**os.environ, "READROOM_REQUIRE_E2E": "1", "READROOM_CHROMIUM": str(tmp_path / "no-chromium")}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-n",
            "2",
            "tests/e2e/test_worklist.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    said = run.stdout + run.stderr
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, said
    assert f"READROOM_REQUIRE_E2E=1 but no Chromium at {tmp_path / 'no-chromium'}" in said
    assert "INTERNALERROR" not in said  # the old check ran inside the xdist workers' collection
