"""The FHIRcast hub (HL7 FHIRcast STU3) against the real ASGI server: a plain websocket subscriber
(``websockets``, as an external viewer or dictation system would be) subscribes to the reader's
session topic — by the session or by an API token — and receives ImagingStudy-open with the study's
identifiers when the reader opens the study; a subscriber of another user's session receives nothing,
and nobody may subscribe to a topic that is not one of their sessions."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client
from websockets.sync.client import connect

from accounts.tokens import api_token_issue
from interfaces.fhir.identifiers import dicom_uid_value
from tests.e2e.test_worklist import AsgiServer, _server_connections_close
from tests.reports.conftest import claimed_head_ct, ct_head_template, head_ct_study  # noqa: F401
from tests.worklist.conftest import neuro_reader, other_neuro_reader  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def hub_server(transactional_db):
    server = AsgiServer()
    server.start()
    yield server
    server.stop()
    _server_connections_close()


def subscribe(client: Client, topic: str, events: str = "ImagingStudy-open", **headers) -> tuple[int, dict]:
    data = {
        "hub.mode": "subscribe",
        "hub.topic": topic,
        "hub.events": events,
        "hub.channel.type": "websocket",
    }
    response = client.post("/fhircast/", data, **headers)
    return response.status_code, response.json()


def channel(server: AsgiServer, endpoint: str):
    path = endpoint.split("/ws/", 1)[1]
    socket = connect(f"ws://127.0.0.1:{server.port}/ws/{path}", origin=server.url, open_timeout=10)
    confirmed = json.loads(socket.recv(timeout=10))
    return socket, confirmed


def test_a_subscriber_gets_imaging_study_open_for_its_session_only(
    hub_server,
    verified_client,
    neuro_reader,  # noqa: F811
    other_neuro_reader,  # noqa: F811
    claimed_head_ct,  # noqa: F811
):
    study = claimed_head_ct
    # given the reader's session topic, and a subscriber on it by API token (a dictation system)
    reader = verified_client(neuro_reader)
    topic = reader.get("/fhircast/").json()["hub.topic"]
    token = api_token_issue(user=neuro_reader)
    status, body = subscribe(Client(), topic, HTTP_AUTHORIZATION=f"Token {token.key}")
    assert status == 202, body
    socket, confirmed = channel(hub_server, body["hub.channel.endpoint"])
    assert confirmed["hub.mode"] == "subscribe" and confirmed["hub.topic"] == topic
    # and another reader's session with its own subscriber (by that session)
    other = Client()
    other.force_login(other_neuro_reader)
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from tests.conftest import current_totp

    device = TOTPDevice.objects.get(user=other_neuro_reader)
    assert other.post("/account/verify/", {"token": current_totp(device)}).status_code == 302
    other_topic = other.get("/fhircast/").json()["hub.topic"]
    assert other_topic != topic
    # the other reader may not subscribe to the first reader's topic, nor an anonymous client
    assert subscribe(other, topic)[0] == 403
    assert subscribe(Client(), topic)[0] in (401, 403)
    status, body = subscribe(other, other_topic)
    assert status == 202, body
    other_socket, _ = channel(hub_server, body["hub.channel.endpoint"])

    # when the reader opens the study's images (the built-in viewer; OHIF's page does the same)
    try:
        assert reader.get(f"/studies/{study.pk}/viewer/").status_code == 200
        event = json.loads(socket.recv(timeout=10))
        quiet = _nothing(other_socket)
    finally:
        socket.close()
        other_socket.close()

    # then the subscriber gets ImagingStudy-open with the study's identifiers
    assert event["event"]["hub.topic"] == topic and event["event"]["hub.event"] == "ImagingStudy-open"
    context = {c["key"]: c["resource"] for c in event["event"]["context"]}
    values = {i["value"] for i in context["study"]["identifier"]}
    assert dicom_uid_value(study.study_instance_uid) in values
    assert study.accession_number in values
    assert (
        context["study"]["resourceType"] == "ImagingStudy" and context["patient"]["resourceType"] == "Patient"
    )
    # and the other session's subscriber nothing
    assert quiet


def _nothing(socket) -> bool:
    try:
        socket.recv(timeout=1.5)
    except TimeoutError:
        return True
    return False


def test_bad_subscriptions_are_refused_with_a_reason(verified_client, neuro_reader):  # noqa: F811
    reader = verified_client(neuro_reader)
    topic = reader.get("/fhircast/").json()["hub.topic"]
    assert subscribe(reader, topic, events="Patient-open")[1]["detail"].startswith("hub.events must name")
    bad_mode = reader.post(
        "/fhircast/", {"hub.mode": "watch", "hub.topic": topic, "hub.events": "ImagingStudy-open"}
    )
    assert bad_mode.status_code == 400 and "hub.mode" in bad_mode.json()["detail"]
    webhook = reader.post(
        "/fhircast/",
        {
            "hub.mode": "subscribe",
            "hub.topic": topic,
            "hub.events": "ImagingStudy-open",
            "hub.channel.type": "webhook",
        },
    )
    assert webhook.status_code == 400 and "websocket" in webhook.json()["detail"]
    assert subscribe(reader, "not-a-topic")[0] == 403


REPORT_EVENTS = "DiagnosticReport-open,DiagnosticReport-update,DiagnosticReport-close,ImagingStudy-close"


def _verified(user) -> Client:
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from tests.conftest import current_totp

    client = Client()
    client.force_login(user)
    device = TOTPDevice.objects.get(user=user)
    assert client.post("/account/verify/", {"token": current_totp(device)}).status_code == 302
    return client


def test_the_report_editor_and_signing_publish_the_diagnostic_report_events_to_the_session_only(
    hub_server,
    neuro_reader,  # noqa: F811
    other_neuro_reader,  # noqa: F811
    claimed_head_ct,  # noqa: F811
):
    from reports.models import Report, ReportStatus
    from tests.reports.conftest import FILLED, next_totp

    study = claimed_head_ct
    # given a dictation system subscribed to the reader's session topic for the report events
    reader = _verified(neuro_reader)
    topic = reader.get("/fhircast/").json()["hub.topic"]
    status, body = subscribe(reader, topic, events=REPORT_EVENTS)
    assert status == 202, body
    socket, confirmed = channel(hub_server, body["hub.channel.endpoint"])
    assert confirmed["hub.events"] == REPORT_EVENTS
    # and another reader's session with its own subscriber to the same events — who may not take
    # the first reader's topic
    other = _verified(other_neuro_reader)
    other_topic = other.get("/fhircast/").json()["hub.topic"]
    assert subscribe(other, topic, events=REPORT_EVENTS)[0] == 403
    status, body = subscribe(other, other_topic, events=REPORT_EVENTS)
    assert status == 202, body
    other_socket, _ = channel(hub_server, body["hub.channel.endpoint"])
    try:
        # when the reader opens the report editor
        assert reader.get(f"/studies/{study.pk}/report/").status_code == 200
        opened = json.loads(socket.recv(timeout=10))["event"]
        # and signs it final from there
        values = {f"value-{key}": value for key, value in FILLED.items()}
        signed = reader.post(
            f"/studies/{study.pk}/report/sign/",
            {**values, "secret": next_totp(neuro_reader), "kind": "final"},
        )
        assert signed.status_code == 302, re.findall(r'role="alert"[^>]*>([^<]*)', signed.content.decode())
        after = [json.loads(socket.recv(timeout=10))["event"] for _ in range(3)]
        quiet = _nothing(other_socket)
    finally:
        socket.close()
        other_socket.close()
    report = Report.objects.get(study=study)
    assert report.status == ReportStatus.FINAL

    # then DiagnosticReport-open: the report (draft: partial), its patient and ImagingStudy, a version
    assert opened["hub.topic"] == topic and opened["hub.event"] == "DiagnosticReport-open"
    context = {c["key"]: c["resource"] for c in opened["context"]}
    assert set(context) == {"report", "patient", "study"}
    assert context["report"]["id"] == str(report.pk) and context["report"]["status"] == "partial"
    assert context["report"]["imagingStudy"] == [{"reference": f"ImagingStudy/{study.pk}"}]
    assert study.accession_number in {i["value"] for i in context["study"]["identifier"]}
    assert opened["context.versionId"]
    # then, on signing: -update (the new status; the prior version named), -close, ImagingStudy-close
    assert [e["hub.event"] for e in after] == [
        "DiagnosticReport-update",
        "DiagnosticReport-close",
        "ImagingStudy-close",
    ]
    update, closed, study_closed = ({c["key"]: c["resource"] for c in e["context"]} for e in after)
    assert (update["report"]["id"], update["report"]["status"]) == (str(report.pk), "final")
    assert "imagingStudy" not in update["report"]  # -update: id, status, code — what changed
    assert update["updates"]["resourceType"] == "Bundle" and update["updates"]["type"] == "transaction"
    assert after[0]["context.priorVersionId"] == opened["context.versionId"]
    assert after[0]["context.versionId"] not in (None, opened["context.versionId"])
    assert closed["report"]["id"] == str(report.pk) and closed["patient"]["resourceType"] == "Patient"
    assert study_closed["study"]["resourceType"] == "ImagingStudy"
    # and the other session's subscriber heard nothing
    assert quiet


def test_logout_closes_the_sessions_fhircast_channels(
    hub_server,
    verified_client,
    neuro_reader,  # noqa: F811
):
    """Issue 15 §9: the session's topic ends with the session; a subscriber's channel on it closes."""
    from websockets.exceptions import ConnectionClosed

    reader = verified_client(neuro_reader)
    topic = reader.get("/fhircast/").json()["hub.topic"]
    key = api_token_issue(user=neuro_reader).key
    status, body = subscribe(
        Client(), topic, events="ImagingStudy-open,UserLogout", HTTP_AUTHORIZATION=f"Token {key}"
    )
    assert status == 202, body
    socket, _ = channel(hub_server, body["hub.channel.endpoint"])
    with socket:
        assert _nothing(socket)  # open while the session lives
        reader.post("/logout/")
        (logout,) = _events(socket, 1)
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=5)
    # nothing was open: only UserLogout (signed out by the user), then the close
    assert logout["hub.event"] == "UserLogout" and _reason(logout) == "user-initiated"
    assert closed.value.rcvd.code == 4401
    # and the topic ended with the session: its subscription is gone, nobody subscribes to it again
    assert _channel_refused(hub_server, body["hub.channel.endpoint"])
    again = subscribe(Client(), topic, events="ImagingStudy-open", HTTP_AUTHORIZATION=f"Token {key}")
    assert again[0] == 403, again


def _channel_refused(server: AsgiServer, endpoint: str) -> bool:
    """The endpoint no longer opens: the websocket handshake is refused (HTTP 403)."""
    from websockets.exceptions import InvalidStatus

    path = endpoint.split("/ws/", 1)[1]
    try:
        connect(f"ws://127.0.0.1:{server.port}/ws/{path}", origin=server.url, open_timeout=10).close()
    except InvalidStatus as refused:
        return refused.response.status_code == 403
    return False


def test_unsubscribe_closes_the_open_channel_and_removes_the_subscription(
    hub_server,
    neuro_reader,  # noqa: F811
    other_neuro_reader,  # noqa: F811
):
    from websockets.exceptions import ConnectionClosed

    reader = _verified(neuro_reader)
    topic = reader.get("/fhircast/").json()["hub.topic"]
    status, body = subscribe(reader, topic)
    assert status == 202, body
    endpoint = body["hub.channel.endpoint"]
    socket, _ = channel(hub_server, endpoint)
    with socket:
        # another reader naming this endpoint with their own topic removes nothing
        other = _verified(other_neuro_reader)
        other_topic = other.get("/fhircast/").json()["hub.topic"]
        unsubscribe = {
            "hub.mode": "unsubscribe",
            "hub.events": "ImagingStudy-open",
            "hub.channel.endpoint": endpoint,
        }
        assert other.post("/fhircast/", {**unsubscribe, "hub.topic": other_topic}).status_code == 202
        assert _nothing(socket)
        # the subscriber's own unsubscribe closes the open channel normally
        assert reader.post("/fhircast/", {**unsubscribe, "hub.topic": topic}).status_code == 202
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=5)
    assert closed.value.rcvd.code == 1000
    assert _channel_refused(hub_server, endpoint)


def test_leaving_a_study_unsigned_publishes_imaging_study_close_to_the_session_only(
    hub_server,
    neuro_reader,  # noqa: F811
    claimed_head_ct,  # noqa: F811
    dr_msk_wi,
):
    study = claimed_head_ct
    # given the reader's session topic with a subscriber for ImagingStudy-close
    reader = _verified(neuro_reader)
    topic = reader.get("/fhircast/").json()["hub.topic"]
    status, body = subscribe(reader, topic, events="ImagingStudy-open,ImagingStudy-close")
    assert status == 202, body
    socket, _ = channel(hub_server, body["hub.channel.endpoint"])
    try:
        # when the reader's editor goes away unsigned (its page-hide beacon)
        assert reader.post(f"/studies/{study.pk}/close/").status_code == 204
        event = json.loads(socket.recv(timeout=10))
        # and a reader who may not see the study tries the same
        from django_otp.plugins.otp_totp.models import TOTPDevice

        from tests.conftest import enrol_totp

        if not TOTPDevice.objects.filter(user=dr_msk_wi).exists():
            enrol_totp(dr_msk_wi)
        outsider = _verified(dr_msk_wi)
        refused = outsider.post(f"/studies/{study.pk}/close/").status_code
        quiet = _nothing(socket)
    finally:
        socket.close()
    # then the subscriber gets ImagingStudy-close with the study's identifiers
    assert event["event"]["hub.topic"] == topic and event["event"]["hub.event"] == "ImagingStudy-close"
    context = {c["key"]: c["resource"] for c in event["event"]["context"]}
    assert study.accession_number in {i["value"] for i in context["study"]["identifier"]}
    # and the outsider is refused, telling nobody anything
    assert refused == 404 and quiet
    # and a GET is not a close
    assert reader.get(f"/studies/{study.pk}/close/").status_code == 405


def test_the_report_editor_carries_its_close_beacon_until_signed(
    neuro_reader,  # noqa: F811
    claimed_head_ct,  # noqa: F811
):
    reader = _verified(neuro_reader)
    page = reader.get(f"/studies/{claimed_head_ct.pk}/report/").content.decode()
    assert f'data-close-url="/studies/{claimed_head_ct.pk}/close/"' in page


SESSION_EVENTS = ",".join(
    (
        "ImagingStudy-open",
        "ImagingStudy-close",
        "DiagnosticReport-open",
        "DiagnosticReport-close",
        "UserHibernate",
        "UserLogout",
    )
)


def _events(socket, count: int) -> list[dict]:
    return [json.loads(socket.recv(timeout=10))["event"] for _ in range(count)]


def _reason(event: dict) -> str:
    (parameters,) = (c["resource"] for c in event["context"] if c["key"] == "parameters")
    assert parameters["resourceType"] == "Parameters"
    return parameters["parameter"][0]["valueCoding"]["code"]


def test_the_screen_lock_closes_what_was_open_and_the_unlock_opens_it_again(
    hub_server,
    neuro_reader,  # noqa: F811
    other_neuro_reader,  # noqa: F811
    claimed_head_ct,  # noqa: F811
):
    """Issue 15: a locked screen shows no PHI; a side-car following the session (a dictation system,
    an external viewer) must not either. FHIRcast STU3 has the event for it: UserHibernate — the
    session is suspended and will resume."""
    from tests.conftest import PASSWORD

    study = claimed_head_ct
    # given a dictation system on the reader's topic, and the reader's report editor open
    reader = _verified(neuro_reader)
    topic = reader.get("/fhircast/").json()["hub.topic"]
    status, body = subscribe(reader, topic, events=SESSION_EVENTS)
    assert status == 202, body
    socket, _ = channel(hub_server, body["hub.channel.endpoint"])
    # and another reader's session, also subscribed, also with a lock to come
    other = _verified(other_neuro_reader)
    other_topic = other.get("/fhircast/").json()["hub.topic"]
    other_socket, _ = channel(
        hub_server, subscribe(other, other_topic, events=SESSION_EVENTS)[1]["hub.channel.endpoint"]
    )
    try:
        assert reader.get(f"/studies/{study.pk}/report/").status_code == 200
        (opened,) = _events(socket, 1)
        assert opened["hub.event"] == "DiagnosticReport-open"
        # when the reader's screen locks (idle)
        assert reader.post("/live/lock/").json() == {"state": "locked"}
        locked = _events(socket, 3)
        # and a second window of that browser asks for the lock too
        assert reader.post("/live/lock/").json() == {"state": "locked"}
        again = _nothing(socket)
        # and when the reader unlocks with their password
        unlock = reader.post(
            "/live/unlock/", json.dumps({"secret": PASSWORD}), content_type="application/json"
        )
        assert unlock.json()["state"] == "live"
        unlocked = _events(socket, 2)
        quiet = _nothing(other_socket)
    finally:
        socket.close()
        other_socket.close()
    # then the lock closed what was open — the report, then the study — and said why
    assert [e["hub.event"] for e in locked] == [
        "DiagnosticReport-close",
        "ImagingStudy-close",
        "UserHibernate",
    ]
    report_closed, study_closed = ({c["key"]: c["resource"] for c in e["context"]} for e in locked[:2])
    assert (
        report_closed["report"]["id"] == {c["key"]: c["resource"] for c in opened["context"]}["report"]["id"]
    )
    assert study.accession_number in {i["value"] for i in study_closed["study"]["identifier"]}
    assert _reason(locked[2]) == "system-timeout"
    # and a repeated lock request sent nothing more
    assert again
    # and the unlock opened the same study and report again, with a new version of the anchor
    assert [e["hub.event"] for e in unlocked] == ["ImagingStudy-open", "DiagnosticReport-open"]
    reopened = {c["key"]: c["resource"] for c in unlocked[1]["context"]}
    assert reopened["report"]["id"] == report_closed["report"]["id"]
    assert unlocked[1]["context.versionId"] not in (None, opened["context.versionId"])
    # and the other session heard nothing of it
    assert quiet


def test_an_idle_expired_sessions_channel_closes_at_its_session_check(
    hub_server,
    neuro_reader,  # noqa: F811
    claimed_head_ct,  # noqa: F811
    settings,
):
    """No request tells of an idle expiry: the channel looks at its session every
    READROOM_WS_SESSION_CHECK_SECONDS, as the worklist socket does, and ends with it."""
    from datetime import timedelta

    from django.conf import settings as django_settings
    from django.contrib.sessions.models import Session
    from django.utils import timezone
    from websockets.exceptions import ConnectionClosed

    settings.READROOM_WS_SESSION_CHECK_SECONDS = 0.3
    study = claimed_head_ct
    # given an external viewer (API token) on the reader's topic, following the open study
    reader = _verified(neuro_reader)
    topic = reader.get("/fhircast/").json()["hub.topic"]
    key = api_token_issue(user=neuro_reader).key
    status, body = subscribe(Client(), topic, events=SESSION_EVENTS, HTTP_AUTHORIZATION=f"Token {key}")
    assert status == 202, body
    socket, _ = channel(hub_server, body["hub.channel.endpoint"])
    with socket:
        assert reader.get(f"/studies/{study.pk}/viewer/").status_code == 200
        assert _events(socket, 1)[0]["hub.event"] == "ImagingStudy-open"
        # a live session: the channel stays open across several checks
        assert _nothing(socket)
        # when the session passes its expiry without a request
        session_key = reader.cookies[django_settings.SESSION_COOKIE_NAME].value
        Session.objects.filter(session_key=session_key).update(
            expire_date=timezone.now() - timedelta(seconds=1)
        )
        # then the channel closes the study, says the user is logged out (timeout), and closes: 4401
        ended = _events(socket, 2)
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=5)
    assert [e["hub.event"] for e in ended] == ["ImagingStudy-close", "UserLogout"]
    study_closed = {c["key"]: c["resource"] for c in ended[0]["context"]}
    assert study.accession_number in {i["value"] for i in study_closed["study"]["identifier"]}
    assert _reason(ended[1]) == "system-timeout"
    assert closed.value.rcvd.code == 4401
    # and the expired session's topic ended: the subscription is removed, a new one is refused
    assert _channel_refused(hub_server, body["hub.channel.endpoint"])
    again = subscribe(Client(), topic, events=SESSION_EVENTS, HTTP_AUTHORIZATION=f"Token {key}")
    assert again[0] == 403, again


def test_a_subscription_made_before_an_idle_expiry_does_not_open_after_it(
    hub_server,
    neuro_reader,  # noqa: F811
):
    """No channel was open when the session expired, so no session check ended the topic: the
    endpoint looks at the session when it is opened, and the subscribe request does too."""
    from datetime import timedelta

    from django.conf import settings as django_settings
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    reader = _verified(neuro_reader)
    topic = reader.get("/fhircast/").json()["hub.topic"]
    key = api_token_issue(user=neuro_reader).key
    status, body = subscribe(Client(), topic, events=SESSION_EVENTS, HTTP_AUTHORIZATION=f"Token {key}")
    assert status == 202, body
    session_key = reader.cookies[django_settings.SESSION_COOKIE_NAME].value
    Session.objects.filter(session_key=session_key).update(expire_date=timezone.now() - timedelta(seconds=1))
    assert _channel_refused(hub_server, body["hub.channel.endpoint"])
    again = subscribe(Client(), topic, events=SESSION_EVENTS, HTTP_AUTHORIZATION=f"Token {key}")
    assert again[0] == 403, again
