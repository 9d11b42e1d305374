"""Issue 15: the web process as deployed — a real uvicorn with the deployed command line's flags.

* Stopping (§4 "graceful shutdown within the process manager's stop timeout"): SIGTERM while a
  websocket is open and a request is still arriving: the socket is closed with 1012 (service restart:
  the page reconnects to another web process), the request is finished and answered, and the
  process exits before the stop timeout the deploy files give the process manager.
* Access log (§7): a QIDO search's patient id never reaches the log; the request line does."""

from __future__ import annotations

import re
import shlex
import signal
import socket
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings as django_settings
from django.test import Client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from accounts.tokens import api_token_issue
from tests.hardening.test_connection_leak import pytestmark  # noqa: F401 — PostgreSQL and Redis
from tests.hardening.uvicorn_process import ROOT, database_url, uvicorn_server

WEB_UNIT = ROOT / "deploy" / "systemd" / "readroom-web.service"


def deployed_web_flags() -> tuple[tuple[str, ...], int, int]:
    """(the flags of the systemd unit's uvicorn line that a test server can take — not host, port,
    workers —, its graceful-shutdown seconds, the unit's TimeoutStopSec)."""
    unit = WEB_UNIT.read_text()
    command = shlex.split(re.search(r"^ExecStart=(.*)$", unit, re.M).group(1))
    flags, skip = [], {"--host", "--port", "--workers"}
    words = iter(command[2:])  # past the uvicorn binary and the application
    for word in words:
        if word in skip:
            next(words)
        else:
            flags.append(word)
    graceful = int(flags[flags.index("--timeout-graceful-shutdown") + 1])
    stop_timeout = int(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M).group(1))
    return tuple(flags), graceful, stop_timeout


def _session_cookie(user) -> str:
    client = Client()
    client.force_login(user)  # the server shares this process's SECRET_KEY (uvicorn_server)
    name = django_settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"


def test_sigterm_finishes_the_request_in_flight_closes_websockets_and_exits_in_time(tmp_path, ops_omar):
    flags, graceful, stop_timeout = deployed_web_flags()
    assert graceful < stop_timeout  # the process manager waits longer than uvicorn does
    with uvicorn_server(tmp_path, database_url(), args=flags) as web:
        # given an open worklist socket
        worklist = connect(
            f"ws://127.0.0.1:{web.port}/ws/worklist/",
            origin=web.url,
            additional_headers={"Cookie": _session_cookie(ops_omar)},
            open_timeout=20,
        )
        worklist.__enter__()  # closed by the server below
        # and a FHIRcast subscribe request whose body is still arriving (hub.mode is in its last part)
        token = api_token_issue(user=ops_omar)
        body = (
            b"hub.channel.type=websocket&hub.events=ImagingStudy-open&hub.topic=not-mine&hub.mode=subscribe"
        )
        upload = socket.create_connection(("127.0.0.1", web.port), timeout=30)
        upload.sendall(
            f"POST /fhircast/ HTTP/1.1\r\nHost: 127.0.0.1:{web.port}\r\n".encode()
            + f"Authorization: Token {token.key}\r\nContent-Length: {len(body)}\r\n".encode()
            + b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
            + body[:20]
        )
        time.sleep(0.3)  # the request has reached Django's handler, which waits for the body
        # when the process manager stops the web process
        stopped_at = time.monotonic()
        web.process.send_signal(signal.SIGTERM)
        # then the socket is closed with "service restart" (the page reconnects elsewhere)
        with pytest.raises(ConnectionClosed) as closed:
            worklist.recv(timeout=graceful)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        # and the request in flight is still read to its end and answered: the hub judged the whole
        # body (a cut one would lack hub.mode: 400), so the refusal of a topic not the caller's
        upload.sendall(body[20:])
        answer = b""
        while not answer.endswith(b"}"):
            chunk = upload.recv(65536)
            assert chunk, f"the connection closed unanswered: {answer!r}"
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 403 Forbidden"), answer[:400]
        assert b"not one of your live sessions" in answer, answer
        upload.close()
        # and the process exits within uvicorn's graceful window, before the manager's SIGKILL
        web.process.wait(timeout=graceful + 2)
        # (uvicorn ends by re-raising the SIGTERM it handled: a clean stop to systemd and docker)
        assert web.process.returncode in (0, -signal.SIGTERM), web.log.read_text()[-3000:]
        assert "Finished server process" in web.log.read_text()
        assert time.monotonic() - stopped_at < stop_timeout


def test_the_access_log_keeps_the_request_line_but_never_the_query(tmp_path, ops_omar):
    token = api_token_issue(user=ops_omar)
    headers = {"Authorization": f"Token {token.key}", "Accept": "application/dicom+json"}
    flags, _graceful, _stop = deployed_web_flags()
    with uvicorn_server(tmp_path, database_url(), args=flags) as web:
        search = requests.get(
            f"{web.url}/dicomweb/studies?PatientID=MRN-4471902", headers=headers, timeout=30
        )
        assert search.status_code == 200, search.text
        cookie = {"Cookie": _session_cookie(ops_omar)}
        socket_url = f"ws://127.0.0.1:{web.port}/ws/worklist/?PatientName=DOE"
        with connect(socket_url, origin=web.url, additional_headers=cookie, open_timeout=20):
            pass
        web.process.terminate()
        web.process.wait(30)
        log = Path(web.log).read_text()
    assert "MRN-4471902" not in log and "DOE" not in log and "PatientName" not in log, log[-2000:]
    assert '"GET /dicomweb/studies?[query redacted] HTTP/1.1" 200' in log, log[-2000:]
    assert '"WebSocket /ws/worklist/?[query redacted]" [accepted]' in log, log[-2000:]
