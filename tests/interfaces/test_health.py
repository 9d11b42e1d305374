"""Interface health for the operations desk: silence against the facility's expected gap, one alert
per episode announced on the operations socket group, cleared when traffic resumes."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import time_machine
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from interfaces.health import interface_alerts_check, interface_health
from interfaces.hl7.inbound import hl7_frame_receive
from interfaces.models import InterfaceAlert
from tests import hl7_data
from worklist.groups import OPERATIONS_GROUP

pytestmark = pytest.mark.django_db(transaction=True)


def listen_operations() -> str:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(OPERATIONS_GROUP, channel)
    return channel


def next_event(channel: str) -> dict:
    async def receive():
        import asyncio

        return await asyncio.wait_for(get_channel_layer().receive(channel), 5)

    return async_to_sync(receive)()["event"]


def test_silent_hl7_raises_one_alert_and_traffic_clears_it(chicago_interfaces):
    # given an HL7 feed whose last message came two hours ago (the facility expects one an hour)
    start = timezone.now()
    with time_machine.travel(start - timedelta(hours=2)):
        hl7_frame_receive(raw=hl7_data.orm().encode(), peer="10.0.0.5:4000")
    channel = listen_operations()
    # when the check runs (twice, as several workers might)
    raised = interface_alerts_check(now=start)
    interface_alerts_check(now=start)
    # then exactly one alert is open and the operations desk was told
    assert [a.interface for a in raised] == ["hl7_in"]
    assert InterfaceAlert.objects.filter(cleared_at__isnull=True).count() == 1
    event = next_event(channel)
    assert (event["type"], event["facility"], event["interface"]) == ("interface.silent", "CHI-L1", "hl7_in")
    # when traffic resumes, the alert clears and the desk hears it
    hl7_frame_receive(raw=hl7_data.orm(accession="A2").encode(), peer="10.0.0.5:4000")
    interface_alerts_check()
    assert InterfaceAlert.objects.get().cleared_at is not None
    assert next_event(channel)["type"] == "interface.resumed"


def test_facility_awaiting_go_live_does_not_alarm(chicago_interfaces):
    (entry,) = interface_health()
    assert entry.hl7_in.status(timezone.now()) == "awaiting"
    assert interface_alerts_check() == []


def test_counts_and_errors(chicago_interfaces):
    hl7_frame_receive(raw=hl7_data.orm().encode())
    hl7_frame_receive(raw=hl7_data.orm().replace("ORC|NW", "ORC|ZZ").encode())
    (entry,) = interface_health()
    assert (entry.hl7_in.count_24h, entry.hl7_in.errors_24h) == (2, 1)
    assert entry.hl7_in.status(timezone.now()) == "ok"


def test_page_for_operations_only(client, ops_omar, admin_chicago, mso_mary, chicago_interfaces):
    hl7_frame_receive(raw=hl7_data.orm().replace("ORC|NW", "ORC|ZZ").encode())
    client.force_login(ops_omar)
    page = client.get("/operations/interfaces/")
    assert page.status_code == 200
    assert b"Lakeshore Medical Center" in page.content
    assert b"ORC-1 order control" in page.content  # the NAK's reason, for the analyst
    for outsider in (admin_chicago, mso_mary):
        client.force_login(outsider)
        assert client.get("/operations/interfaces/").status_code == 403


def test_polling_does_not_keep_an_idle_session_alive(client, ops_omar, chicago_interfaces):
    client.force_login(ops_omar)
    start = timezone.now()
    idle = settings.READROOM_IDLE_TIMEOUT_MINUTES
    # the screen polls every 30 s, nobody touches it
    for minute in range(1, idle + 2):
        with time_machine.travel(start + timedelta(minutes=minute)):
            client.get("/operations/interfaces/", HTTP_HX_REQUEST="true", HTTP_X_READROOM_POLL="1")
    with time_machine.travel(start + timedelta(minutes=idle + 2)):
        response = client.get("/operations/interfaces/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_a_silent_interface_is_a_notice_to_each_operations_user_once_acknowledged_by_them(
    chicago_interfaces, client, verified_client, ops_omar, dr_neuro_il
):
    from worklist.models import AlertAcknowledgement, NoticeKind, UserNotice

    # given an HL7 feed silent for two hours (the facility expects a message an hour)
    start = timezone.now()
    with time_machine.travel(start - timedelta(hours=2)):
        hl7_frame_receive(raw=hl7_data.orm().encode(), peer="10.0.0.5:4000")
    # when the check runs twice (as several workers might)
    interface_alerts_check(now=start)
    interface_alerts_check(now=start + timedelta(minutes=1))
    # then operations have one notice, on their pages until acknowledged, and the reader none
    [notice] = UserNotice.objects.filter(kind=NoticeKind.INTERFACE_SILENT)
    assert notice.user == ops_omar and notice.url == "/operations/interfaces/"
    assert notice.text.startswith("Lakeshore Medical Center: HL7 in silent, since ")
    client.force_login(ops_omar)
    [pending] = client.get("/live/pending/").json()["notices"]
    assert pending["title"] == "Interface silent"
    body = json.dumps({"notice": pending["key"]})
    verified_client(dr_neuro_il)
    assert client.post("/live/acknowledge/", body, content_type="application/json").status_code == 404
    client.force_login(ops_omar)
    assert client.post("/live/acknowledge/", body, content_type="application/json").status_code == 200
    assert AlertAcknowledgement.objects.get(kind=pending["key"]).user == ops_omar
    assert client.get("/live/pending/").json()["notices"] == []
