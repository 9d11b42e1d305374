"""Issue 15 §9: a worklist socket ends with its session. Logout closes that session's open sockets at
once (4401, which live.js shows as signed out), an idle session's sockets close when it expires, and
the sockets of the user's other sessions and of other users stay open. Against a real uvicorn with
a plain ``websockets`` client, as a browser holds the socket."""

from __future__ import annotations

import time
from contextlib import ExitStack
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.e2e.test_worklist import AsgiServer, _server_connections_close

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server(transactional_db):
    server = AsgiServer()
    server.start()
    yield server
    server.stop()
    _server_connections_close()


def _signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _socket(server: AsgiServer, client: Client):
    name = django_settings.SESSION_COOKIE_NAME
    cookie = f"{name}={client.cookies[name].value}"
    return connect(
        f"ws://127.0.0.1:{server.port}/ws/worklist/",
        origin=server.url,
        additional_headers={"Cookie": cookie},
        open_timeout=10,
    )


def _close_code(socket, timeout: float) -> int | None:
    """The close code the server sent within ``timeout`` seconds; None if the socket stayed open."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.recv(timeout=max(0.05, deadline - time.monotonic()))
        except TimeoutError:
            return None
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
    return None


def _open(socket) -> bool:
    return _close_code(socket, 1.0) is None


def test_logout_closes_that_sessions_sockets_only(server, ops_omar, admin_chicago):
    # given two sessions of one user and a session of another, each with an open socket
    first, second, other = _signed_in(ops_omar), _signed_in(ops_omar), _signed_in(admin_chicago)
    with ExitStack() as stack:
        sockets = [stack.enter_context(_socket(server, c)) for c in (first, second, other)]
        assert all(_open(s) for s in sockets)
        # when the first session signs out
        assert first.post("/logout/").status_code in (200, 302)
        # then its socket is closed with 4401 at once (no waiting for a session check)
        started = time.monotonic()
        assert _close_code(sockets[0], 5.0) == 4401
        assert time.monotonic() - started < 5.0
        # and the user's other session and the other user keep theirs
        assert _open(sockets[1]) and _open(sockets[2])


def test_an_idle_sessions_socket_closes_when_the_session_expires(server, ops_omar, settings):
    settings.READROOM_WS_SESSION_CHECK_SECONDS = 0.3
    client = _signed_in(ops_omar)
    with _socket(server, client) as socket:
        # a live session: the socket stays open across several checks
        assert _close_code(socket, 1.5) is None
        # when the session passes its expiry (idle: no request renewed it)
        key = client.cookies[django_settings.SESSION_COOKIE_NAME].value
        Session.objects.filter(session_key=key).update(expire_date=timezone.now() - timedelta(seconds=1))
        # then the socket closes with 4401
        assert _close_code(socket, 5.0) == 4401
