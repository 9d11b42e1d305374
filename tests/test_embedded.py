"""The embedded topology as `make demo` starts it: a real process on SQLite, serving the login page,
with every demo login able to sign in over HTTP."""

import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def embedded_server(tmp_path_factory):
    """One embedded process for the module: migrating a fresh SQLite file takes seconds."""
    tmp_path = tmp_path_factory.mktemp("embedded")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}
    }
    env["READROOM_DATA_DIR"] = str(tmp_path)
    manage = [sys.executable, "manage.py"]
    for step in (["migrate", "--noinput", "-v0"], ["load_demo"]):
        subprocess.run(manage + step, cwd=ROOT, env=env, check=True, capture_output=True, timeout=180)
    port, hl7_port, dicom_port = _free_port(), _free_port(), _free_port()
    log = open(tmp_path / "server.log", "w+")  # noqa: SIM115  (closed below)
    command = [*manage, "run_embedded", "--port", str(port), "--hl7-port", str(hl7_port)]
    command += ["--dicom-port", str(dicom_port), "--simulate", "--simulate-interval", "1"]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (tmp_path / "server.log").read_text().count("ReadRoom is running at"):
            break
        assert proc.poll() is None, (tmp_path / "server.log").read_text()
        time.sleep(0.2)
    try:
        yield url, tmp_path / "server.log"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_embedded_server_serves_login_and_demo_logins(embedded_server):
    url, log_path = embedded_server
    banner = log_path.read_text()
    assert f"ReadRoom is running at {url}" in banner
    assert re.search(r"ops\s+Operations", banner)
    assert requests.get(url + "readyz", timeout=5).json()["status"] == "ready"
    session = requests.Session()
    login = session.get(url + "login/", timeout=5)
    assert login.status_code == 200 and "Sign in to ReadRoom" in login.text
    # a printed login, through the real form with its CSRF token
    csrf = session.cookies["csrftoken"]
    response = session.post(
        url + "login/",
        data={"username": "ops", "password": "readroom-demo", "csrfmiddlewaretoken": csrf},
        headers={"Referer": url + "login/"},
        timeout=10,
    )
    assert response.status_code == 200
    assert "Omar Diaz" in response.text and "Audit log" in response.text
    # static files are served by the same process
    assert session.get(url + "static/vendor/htmx/htmx.min.js", timeout=5).status_code == 200


def test_embedded_simulator_sends_through_the_real_ports(embedded_server):
    _url, log_path = embedded_server
    database = log_path.parent / "readroom.sqlite3"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with sqlite3.connect(database, timeout=10) as db:
            orders = db.execute("SELECT count(*) FROM imaging_order").fetchone()[0]
            studies = db.execute(
                "SELECT count(*) FROM imaging_study WHERE number_of_instances > 0"
            ).fetchone()[0]
            inbound = db.execute(
                "SELECT count(*) FROM interfaces_inboundmessage WHERE status='processed'"
            ).fetchone()[0]
        if orders >= 2 and studies >= 2:
            break
        time.sleep(0.5)
    # (a tuple comparison would pass on (3, 0): both counts are checked)
    assert orders >= 2 and studies >= 2, log_path.read_text()[-3000:]
    assert inbound >= 2
    assert "simulated" in log_path.read_text()
