"""`make screenshots`: the README's pictures, taken from a fresh demo in Chromium (Playwright).

A throwaway embedded install (SQLite, own data directory, free ports) is migrated and loaded with
the demo, started with ``run_embedded --simulate``, and sent one code-stroke head CT through the
real HL7 and DICOM edges (``simulate_facility --stroke-rate 1``). Then, signed in through the login
page (and the authenticator step, with ``totp_code``), it saves into docs/screenshots/:

- worklist.png: the worklist of a reader eligible for the stroke, with its alert;
- reading.png: that reader's reading screen (report editor) of the stroke;
- operations.png: the operations worklist;
- qa.png: the medical director's QA dashboard (dark theme for the readers, light for the office).

Run from the repository root: ``.venv/bin/python docs/screenshots/take.py`` (needs Chromium:
``READROOM_CHROMIUM`` or /usr/bin/chromium)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "screenshots"
PYTHON = sys.executable
PASSWORD = "readroom-demo"  # noqa: S105 — radiology.demo.DEMO_PASSWORD (Django is not set up here)
CHROMIUM = os.environ.get("READROOM_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
VIEWPORT = {"width": 1600, "height": 1000}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manage(env: dict, *args: str) -> str:
    done = subprocess.run(  # noqa: S603 — our own manage.py with our arguments
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout.strip()


def wait_for_port(port: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise SystemExit(f"nothing listening on {port} after {timeout:.0f} s")


# Which reader may read the newest code stroke now, and its id: the eligibility engine decides.
STROKE_READER = """
from django.utils import timezone
from credentialing.eligibility import eligible_readers
from imaging.models import Study
study = Study.objects.filter(priority="STROKE").order_by("-id").first()
readers = eligible_readers(study, timezone.now()) if study else []
print(study.pk if study else "", readers[0].username if readers else "")
"""


def stroke_reader(env: dict, timeout: float = 120) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # the last line: Django's shell may first say how many models it imported
        answer = manage(env, "shell", "-v", "0", "-c", STROKE_READER).splitlines()
        study, _, username = (answer[-1] if answer else "").partition(" ")
        if study and username:
            return int(study), username
        time.sleep(2)
    raise SystemExit("the simulated stroke was not routed to an eligible reader")


def sign_in(page, url: str, env: dict, username: str) -> None:
    page.goto(f"{url}login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()  # the next page: home, or the authenticator step
    code = page.get_by_label("Code from your authenticator app")
    if code.count():
        code.fill(manage(env, "totp_code", username))
        page.get_by_role("button", name="Verify").click()
    try:
        page.get_by_test_id("current-user").wait_for()
    except Exception:
        page.screenshot(path=str(OUT / f"failed-sign-in-{username}.png"))
        raise


def main() -> None:
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="readroom-screenshots-"))
    web, hl7, dicom = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"READROOM_DATA_DIR": str(work), "PYTHONUNBUFFERED": "1"})
    manage(env, "migrate", "--noinput")
    manage(env, "load_demo")
    ports = ["--port", str(web), "--hl7-port", str(hl7), "--dicom-port", str(dicom)]
    server = subprocess.Popen(  # noqa: S603 — our own manage.py
        [PYTHON, "manage.py", "run_embedded", *ports, "--simulate", "--simulate-interval", "3600"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(web)
        sender = ["simulate_facility", "CHI-L1", "--hl7-port", str(hl7), "--dicom-port", str(dicom)]
        manage(env, *sender, "--count", "3", "--stroke-rate", "0", "--slices", "8")  # routine work
        manage(env, *sender, "--count", "1", "--stroke-rate", "1", "--slices", "24")  # the stroke
        study_id, reader = stroke_reader(env)
        url = f"http://127.0.0.1:{web}/"
        OUT.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM)
            for username, shots in (
                (reader, [("worklist/", "worklist.png"), (f"studies/{study_id}/report/", "reading.png")]),
                ("ops", [("operations/worklist/", "operations.png")]),
                ("director", [("qa/dashboard/", "qa.png")]),
            ):
                page = browser.new_page(viewport=VIEWPORT)
                sign_in(page, url, env, username)
                for path, name in shots:
                    if name == "reading.png":  # the editor is the claimant's: claim the stroke first
                        page.locator(f'tr[data-study-id="{study_id}"] button[data-action="claim"]').click()
                        page.locator(f'tr[data-study-id="{study_id}"] [data-action="release"]').wait_for()
                    page.goto(f"{url}{path}")
                    page.wait_for_load_state("networkidle")
                    page.screenshot(path=str(OUT / name))
                    print(f"docs/screenshots/{name}")
                page.close()
            browser.close()
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
