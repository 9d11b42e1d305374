"""Issue 15 §2: no request can leak a pooled database connection.

A DICOMweb query with a control character in a parameter name (``?bad%0Bkey=1``) used to make the
view echo the name in a ``Warning`` header that uvicorn refused to send; Django's ASGI handler then
skipped ``response.close()``, so ``request_finished`` never ran and the pooled connection was never
returned. After ``max_size`` such requests every database request waited for the pool and failed.

Here a real uvicorn serves the production settings with a pool of 4 connections: 100 such requests
(each a 400 now), then a normal query answers 200 and ``/healthz`` says the pool is reachable."""

from __future__ import annotations

import asyncio
import os

import pytest
import requests
from django.db import connection

from accounts.tokens import api_token_issue
from tests.hardening.uvicorn_process import database_url as _database_url
from tests.hardening.uvicorn_process import uvicorn_server
from tests.net import free_port

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the web pool is PostgreSQL's"),
    pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the production topology needs Redis"),
]


def test_a_hundred_control_character_queries_leave_the_pool_whole(tmp_path, ops_omar):
    token = api_token_issue(user=ops_omar)
    headers = {"Authorization": f"Token {token.key}", "Accept": "application/dicom+json"}
    with uvicorn_server(tmp_path, _database_url()) as web:
        base = web.url
        statuses = []
        for _ in range(100):
            try:
                # requests would re-quote the name; the raw query string is what the attacker sends
                response = requests.get(f"{base}/dicomweb/studies?bad%0Bkey=1", headers=headers, timeout=10)
                statuses.append(response.status_code)
            except requests.ConnectionError:
                statuses.append("connection dropped")
        assert set(statuses) == {400}, statuses[:5]
        assert "control character" in response.json()["detail"]
        # a value with a control character is refused the same way
        value = requests.get(f"{base}/dicomweb/studies?PatientName=a%00b", headers=headers, timeout=30)
        assert value.status_code == 400
        # and after them the pool still has its connections: a normal query and health answer at once
        normal = requests.get(f"{base}/dicomweb/studies", headers=headers, timeout=30)
        assert normal.status_code == 200, normal.text
        health = requests.get(f"{base}/healthz", timeout=5)
        assert health.status_code == 200 and health.json()["database"] == "ok", health.text


def test_healthz_fails_when_the_web_tier_cannot_reach_its_database(tmp_path, db):
    unreachable = f"postgres://postgres@127.0.0.1:{free_port()}/nowhere"
    with uvicorn_server(tmp_path, unreachable) as web:
        base = web.url
        health = requests.get(f"{base}/healthz", timeout=15)
        ready = requests.get(f"{base}/readyz", timeout=30)
    assert health.status_code == 503, health.text
    assert health.json()["status"] == "failing"
    assert health.json()["database"].startswith("failed")
    # readiness: down (not merely degraded) without its database; Redis and storage still answer
    assert ready.status_code == 503, ready.text
    body = ready.json()
    assert body["status"] == "down" and body["reason"].startswith("database failed")
    assert body["checks"]["storage"].startswith("ok") and body["checks"]["broker"].startswith("ok")


@pytest.mark.asyncio
async def test_a_response_the_server_cannot_send_is_still_closed():
    """The depth of the fix: whatever makes the server's ``send`` raise, Django still closes the
    response, and ``request_finished`` (which returns the pooled connection) runs."""
    from django.core.signals import request_finished

    from radiology.asgi import application

    finished = []

    def on_finished(**kwargs):
        finished.append(kwargs["sender"])

    bodies = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        if bodies:
            return bodies.pop()
        await asyncio.Event().wait()  # the client stays connected

    async def send(message):
        if message["type"] == "http.response.start":
            raise RuntimeError("Invalid HTTP header value")  # what h11 raises for b"\x0b"

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/healthz",
        "raw_path": b"/healthz",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
    request_finished.connect(on_finished)
    try:
        await application(scope, receive, send)
    finally:
        request_finished.disconnect(on_finished)
    assert finished, "request_finished never ran: the request's connection would stay checked out"
