"""The screen lock is the server's to know (issue 14, docs/alerts.md "Screen lock"): a locked session's
sockets say so (``session.state``) and forward only the lock's fields — a code stroke waiting
(facility, class, time), never the row, the accession, the procedure or anything of the patient —
while the user's other sessions go on as before; unlocking restores the full events."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.test import Client
from django.utils import timezone

from facilities.models import PriorityClass
from tests.conftest import PASSWORD
from tests.worklist.conftest import make_eligible, make_study
from tests.worklist.test_consumer import _connect
from worklist.groups import OPERATIONS_GROUP
from worklist.live import LOCKED_STUDY_FIELDS
from worklist.services import study_route

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@sync_to_async
def _signed_in(user) -> tuple[Client, bytes]:
    """A verified session (as after the login's code) and its cookie for the socket."""
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    client = Client()
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = TOTPDevice.objects.get(user=user, confirmed=True).persistent_id
    session.save()
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    return client, cookie.encode()


@sync_to_async
def _route_stroke(facility) -> tuple[int, str]:
    study = make_study(
        facility,
        code="70450",
        text="CT HEAD W/O CONTRAST CODE STROKE",
        priority=PriorityClass.STROKE,
        is_stroke=True,
        first_received_at=timezone.now(),
    )
    study_route(study_id=study.pk)
    return study.pk, study.accession_number


async def _drain(communicator, timeout: float = 1.0) -> list[dict]:
    received = []
    while not await communicator.receive_nothing(timeout=timeout):
        received.append(await communicator.receive_json_from(timeout=timeout))
    return received


async def test_a_locked_session_socket_says_locked_and_gets_no_phi_until_unlocked(dr_neuro_il, chicago):
    # given a neuro reader eligible at Lakeshore with two sessions (two browsers), a socket each
    await sync_to_async(make_eligible)(dr_neuro_il, chicago)
    locking, locking_cookie = await _signed_in(dr_neuro_il)
    _, other_cookie = await _signed_in(dr_neuro_il)
    screen, connected, _ = await _connect(locking_cookie)
    other, other_connected, _ = await _connect(other_cookie)
    assert connected and other_connected
    # when the first browser's page locks at the idle time
    assert (await sync_to_async(locking.post)("/live/lock/")).json() == {"state": "locked"}
    # then its socket says so
    assert await screen.receive_json_from(timeout=3) == {"type": "session.state", "state": "locked"}
    # and a code stroke routed now still reaches it, with the lock's fields only
    study_id, accession = await _route_stroke(chicago)
    told = await _drain(screen)
    assert [event["type"] for event in told] == ["alert", "study.added", "study.escalated"]
    alert = told[0]
    assert (alert["step"], alert["study"]["id"], alert["study"]["facility_name"]) == (
        "stroke_alert",
        study_id,
        "Lakeshore Medical Center",
    )
    for event in told:
        assert set(event["study"]) <= set(LOCKED_STUDY_FIELDS)
        assert "row" not in event and "was" not in event
        assert accession not in json.dumps(event) and "CT HEAD" not in json.dumps(event)
    # while the other browser's socket, not locked, gets the full events and its row
    full = await _drain(other)
    assert full[0]["type"] == "alert" and full[0]["study"]["accession"] == accession
    assert full[1]["row"]["op"] == "upsert" and accession in full[1]["row"]["html"]
    # when the first browser unlocks with the password
    unlocked = await sync_to_async(locking.post)(
        "/live/unlock/", json.dumps({"secret": PASSWORD}), content_type="application/json"
    )
    assert unlocked.json()["state"] == "live"
    # then its socket says Live again and forwards events whole
    assert await screen.receive_json_from(timeout=3) == {"type": "session.state", "state": "live"}
    await get_channel_layer().group_send(
        f"worklist.user.{dr_neuro_il.pk}",
        {"type": "worklist.event", "event": {"type": "study.updated", "study": {"id": 7, "accession": "A1"}}},
    )
    assert await screen.receive_json_from(timeout=3) == {
        "type": "study.updated",
        "study": {"id": 7, "accession": "A1"},
    }
    await screen.disconnect()
    await other.disconnect()


async def test_a_socket_opened_behind_the_lock_says_locked_first_and_drops_what_a_lock_cannot_show(
    ops_omar,
):
    # given an operations session already locked (the lock page's socket connects after the lock)
    client = Client()
    await sync_to_async(client.force_login)(ops_omar)
    assert (await sync_to_async(client.post)("/live/lock/")).status_code == 200
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    screen, connected, _ = await _connect(cookie.encode())
    assert connected
    # then its first message is the lock
    assert await screen.receive_json_from(timeout=3) == {"type": "session.state", "state": "locked"}
    # and operations' alarms come without their text; anything else a lock cannot show, not at all
    layer = get_channel_layer()
    for event in (
        {"type": "report.critical_overdue", "report": 9, "facility": "L", "accession": "A9", "deadline": "x"},
        {"type": "notice", "notice": {"key": "notice:1", "kind": "k", "title": "T", "text": "ACC-1 CT"}},
        {"type": "study.priors.detail", "patient": "Rivera"},
        {"type": "worklist.refresh"},
    ):
        await layer.group_send(OPERATIONS_GROUP, {"type": "worklist.event", "event": event})
    told = await _drain(screen)
    assert told == [
        {"type": "report.critical_overdue", "report": 9, "facility": "L", "deadline": "x"},
        {"type": "notice", "notice": {"key": "notice:1", "kind": "k", "title": "T"}},
    ]
    await screen.disconnect()


async def test_the_sockets_session_check_finds_a_lock_whose_message_was_lost(ops_omar, settings):
    # given an operations socket, with the session check every 0.2 s
    settings.READROOM_WS_SESSION_CHECK_SECONDS = 0.2
    client = Client()
    await sync_to_async(client.force_login)(ops_omar)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    screen, connected, _ = await _connect(cookie.encode())
    assert connected

    # when the session is locked without its message reaching the socket (stored only)
    @sync_to_async
    def lock_stored_only() -> None:
        from accounts.middleware import LOCKED_KEY

        session = client.session
        session[LOCKED_KEY] = True
        session.save()

    await lock_stored_only()
    # then the socket finds it at its next look, says so, and holds back the rows from then on
    assert await screen.receive_json_from(timeout=3) == {"type": "session.state", "state": "locked"}
    await get_channel_layer().group_send(
        OPERATIONS_GROUP,
        {
            "type": "worklist.event",
            "event": {"type": "study.added", "study": {"id": 3}, "row": {"html": "x"}},
        },
    )
    assert await screen.receive_json_from(timeout=3) == {"type": "study.added", "study": {"id": 3}}
    await screen.disconnect()
