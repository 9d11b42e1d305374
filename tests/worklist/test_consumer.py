"""/ws/worklist/: only signed-in users, signing roles only with a verified second factor, only
from our own origin; each socket joins only its user's groups."""

import contextlib

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice

from radiology.asgi import application
from worklist.groups import OPERATIONS_GROUP, user_group

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

ORIGIN = (b"origin", b"http://localhost")


@sync_to_async
def _session_cookie(user, *, verified: bool = False) -> bytes:
    from django.test import Client

    client = Client()
    client.force_login(user)
    if verified:
        session = client.session
        session[DEVICE_ID_SESSION_KEY] = TOTPDevice.objects.get(user=user).persistent_id
        session.save()
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


# Every communicator a test opens, refused ones included: a refused consumer still waits on its
# channel-layer receive, and one left pending at the loop's teardown once held a run for the full
# 300-s pytest-timeout (CI, stop 26). Each test's sockets are disconnected before its loop closes.
_opened: list[WebsocketCommunicator] = []


@pytest_asyncio.fixture(autouse=True)
async def _sockets_closed():
    yield
    while _opened:
        with contextlib.suppress(Exception):  # a refused or already-closed socket: nothing to finish
            await _opened.pop().disconnect(timeout=2)


async def _connect(cookie: bytes | None, origin=ORIGIN):
    headers = [origin, (b"host", b"localhost")]
    if cookie:
        headers.append((b"cookie", cookie))
    communicator = WebsocketCommunicator(application, "/ws/worklist/", headers=headers)
    _opened.append(communicator)
    connected, code = await communicator.connect()
    return communicator, connected, code


async def test_anonymous_socket_is_refused():
    _communicator, connected, code = await _connect(None)
    assert not connected
    assert code == 4401


async def test_foreign_origin_is_refused(ops_omar):
    cookie = await _session_cookie(ops_omar)
    _communicator, connected, _ = await _connect(cookie, origin=(b"origin", b"https://evil.example"))
    assert not connected


async def test_radiologist_without_verified_second_factor_is_refused(dr_neuro_il):
    cookie = await _session_cookie(dr_neuro_il, verified=False)
    _communicator, connected, code = await _connect(cookie)
    assert not connected
    assert code == 4403


async def test_verified_radiologist_receives_own_events_but_not_operations(dr_neuro_il):
    cookie = await _session_cookie(dr_neuro_il, verified=True)
    communicator, connected, _ = await _connect(cookie)
    assert connected
    layer = get_channel_layer()
    await layer.group_send(OPERATIONS_GROUP, {"type": "worklist.event", "event": {"type": "study.escalated"}})
    await layer.group_send(
        user_group(dr_neuro_il.pk),
        {"type": "worklist.event", "event": {"type": "study.added", "study": {"id": 7}}},
    )
    assert await communicator.receive_json_from(timeout=2) == {
        "type": "study.added",
        "study": {"id": 7},
    }
    assert await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect()


async def test_operations_socket_joins_operations_group(ops_omar):
    cookie = await _session_cookie(ops_omar)
    communicator, connected, _ = await _connect(cookie)
    assert connected
    await get_channel_layer().group_send(
        OPERATIONS_GROUP,
        {"type": "worklist.event", "event": {"type": "study.escalated", "study": {"id": 1}}},
    )
    assert (await communicator.receive_json_from(timeout=2))["type"] == "study.escalated"
    await communicator.send_json_to({"type": "claim"})
    assert (await communicator.receive_json_from(timeout=2))["type"] == "error"
    await communicator.disconnect()


async def test_stroke_routed_while_connected_reaches_the_eligible_reader_only(
    dr_neuro_il, dr_msk_wi, chicago, lakeview
):
    # given an IL neuro reader on shift at Lakeshore and a WI-only MSK reader on shift at Lakeview,
    # both with the worklist socket open
    from django.utils import timezone

    from facilities.models import PriorityClass
    from tests.conftest import enrol_totp
    from tests.worklist.conftest import make_eligible, make_study
    from worklist.services import study_route

    @sync_to_async
    def given() -> None:
        enrol_totp(dr_msk_wi)
        make_eligible(dr_neuro_il, chicago)
        make_eligible(dr_msk_wi, lakeview)

    await given()
    neuro, connected_neuro, _ = await _connect(await _session_cookie(dr_neuro_il, verified=True))
    wi, connected_wi, _ = await _connect(await _session_cookie(dr_msk_wi, verified=True))
    assert connected_neuro and connected_wi

    # when a code-stroke head CT at Lakeshore (IL) is routed
    @sync_to_async
    def route_stroke() -> int:
        study = make_study(
            chicago,
            code="70450",
            priority=PriorityClass.STROKE,
            is_stroke=True,
            first_received_at=timezone.now(),
        )
        study_route(study_id=study.pk)
        return study.pk

    study_id = await route_stroke()

    # then the neuro reader's screen hears of it at once: the alert, before the row is rendered
    alert = await neuro.receive_json_from(timeout=3)
    assert (alert["type"], alert["step"], alert["study"]["id"]) == ("alert", "stroke_alert", study_id)
    assert "row" not in alert and alert["study"]["claimed_by"] is None
    # then the study itself with the reader's row
    event = await neuro.receive_json_from(timeout=3)
    assert event["type"] == "study.added" and event["row"]["op"] == "upsert"
    assert event["study"]["id"] == study_id
    assert event["study"]["is_stroke"] is True and event["study"]["claimed_by"] is None
    # and the WI-only reader's socket receives nothing at all
    assert await wi.receive_nothing(timeout=0.5)
    await neuro.disconnect()
    await wi.disconnect()
