"""OHIF's frame requests on the fast path (``interfaces.dicom.web_fast``) against a real uvicorn,
over real HTTP: the same bytes and headers as the Django view, for native and compressed frames;
the same refusals (anonymous, another facility, credentialing staff, an unverified second factor on
another session of a granted reader, a locked screen, a deactivated account, a withdrawn privilege
once the grant's window is over); the PHI audit row written."""

from __future__ import annotations

import re
import time
from io import BytesIO

import pytest
import requests
from auditlog.models import LogEntry
from django.conf import settings as django_settings
from django.core.cache import cache
from django.core.signals import request_started
from django.test import Client
from pydicom import dcmread
from pydicom.uid import RLELossless, generate_uid

from accounts.middleware import LOCKED_KEY
from credentialing.models import FacilityPrivilege, PrivilegeStatus
from imaging.models import Instance
from interfaces.dicom import web_access, web_signin
from interfaces.dicom.receive import dicom_instance_receive
from interfaces.dicom.web_fast import FastFrames
from tests.e2e.test_worklist import AsgiServer, _server_connections_close
from tests.imaging.test_ohif import read_ct, reader, reader_client  # noqa: F401
from tests.reports.conftest import ct_head_template  # noqa: F401
from tests.worklist.conftest import neuro_reader  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)

OHIF = "multipart/related; type=application/octet-stream; transfer-syntax=*"
DECODED = "multipart/related; type=application/octet-stream"
# what differs between two answers by nature: the time, and the multipart boundary (random)
UNCOMPARED = {"date", "server"}


@pytest.fixture(autouse=True)
def fresh_grants():
    cache.clear()
    web_access._GRANTS.clear()
    web_access._ROWS.clear()
    web_signin._SIGNINS.clear()
    yield
    cache.clear()
    web_access._GRANTS.clear()
    web_access._ROWS.clear()
    web_signin._SIGNINS.clear()


@pytest.fixture
def server(transactional_db, image_store):
    server = AsgiServer()
    server.start()
    yield server
    server.stop()
    _server_connections_close()


@pytest.fixture
def senders():
    """Who handled each request: ``FastFrames`` alone, or Django's handler (after it, or alone)."""
    seen: list[str] = []

    def on_started(sender, **kwargs):
        seen.append("fast" if sender is FastFrames else "django")

    request_started.connect(on_started)
    yield seen
    request_started.disconnect(on_started)


def browser(server: AsgiServer, client: Client) -> requests.Session:
    name = django_settings.SESSION_COOKIE_NAME
    session = requests.Session()
    if name in client.cookies:
        session.headers["Cookie"] = f"{name}={client.cookies[name].value}"
    return session


def urls(server: AsgiServer, study) -> tuple[str, list[str]]:
    root = f"{server.url}/dicomweb/studies/{study.study_instance_uid}"
    frames = [
        f"{root}/series/{i.series.series_instance_uid}/instances/{i.sop_instance_uid}/frames/1"
        for i in Instance.objects.filter(series__study=study).select_related("series").order_by("id")
    ]
    return f"{root}/metadata", frames


def add_rle_slice(study) -> None:
    """One more slice of the study, stored RLE Lossless (a compressed syntax)."""
    first = Instance.objects.filter(series__study=study).order_by("id").first()
    from imaging.storage import encrypted_read

    ds = dcmread(BytesIO(encrypted_read(first.storage_path)))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = 99
    ds.compress(RLELossless)
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    assert dicom_instance_receive(facility=study.facility, part10=buffer.getvalue()).ok


def normalised(response: requests.Response) -> tuple[dict[str, str], bytes]:
    boundary = re.search(r'boundary="?([^";]+)', response.headers["Content-Type"]).group(1)
    headers = {
        name.lower(): value.replace(boundary, "BOUNDARY")
        for name, value in response.headers.items()
        if name.lower() not in UNCOMPARED
    }
    return headers, response.content.replace(boundary.encode(), b"BOUNDARY")


def test_fast_frames_are_the_views_bytes_and_headers(server, read_ct, reader, settings, senders):  # noqa: F811
    # given a claimed CT with native slices and one RLE slice, its reader's verified browser
    add_rle_slice(read_ct)
    http = browser(server, reader_client(reader))
    metadata, frames = urls(server, read_ct)
    # when the viewer opens the study (the metadata: the view's whole decision, held)
    assert http.get(metadata, headers={"Accept": "application/dicom+json"}).status_code == 200
    for url in frames:
        for accept in (OHIF, DECODED):
            # and asks for each frame as stored and decoded, first on the fast path
            del senders[:]
            settings.READROOM_DICOMWEB_FAST_FRAMES = True
            fast = http.get(url, headers={"Accept": accept})
            assert senders == ["fast"], "the fast path did not answer"
            # then through Django's view
            settings.READROOM_DICOMWEB_FAST_FRAMES = False
            del senders[:]
            slow = http.get(url, headers={"Accept": accept})
            assert senders == ["django"]
            # then both answers are the same, header for header and byte for byte
            assert fast.status_code == slow.status_code == 200
            (fast_headers, fast_body), (slow_headers, slow_body) = normalised(fast), normalised(slow)
            assert fast_headers == slow_headers
            assert fast_body == slow_body
    # and the RLE slice was sent as its stored bitstream with OHIF's Accept
    assert b"1.2.840.10008.1.2.5" in http.get(frames[-1], headers={"Accept": OHIF}).content


def test_fast_frames_are_audited(server, read_ct, reader, senders):  # noqa: F811
    http = browser(server, reader_client(reader))
    metadata, frames = urls(server, read_ct)
    assert http.get(metadata, headers={"Accept": "application/dicom+json"}).status_code == 200
    del senders[:]
    assert http.get(frames[0], headers={"Accept": OHIF}).status_code == 200
    assert senders == ["fast"]
    rows = LogEntry.objects.filter(action=LogEntry.Action.ACCESS, object_pk=str(read_ct.pk))
    frame_rows = [
        r for r in rows if (r.additional_data or {}).get("read", {}).get("kind") == "dicomweb-frames"
    ]
    assert len(frame_rows) == 1
    assert frame_rows[0].actor_id == reader.pk and frame_rows[0].remote_addr == "127.0.0.1"


def test_the_fast_path_refuses_as_the_view_does(
    server,
    read_ct,  # noqa: F811
    reader,  # noqa: F811
    dr_msk_wi,
    msk_wi_credentials,
    mso_mary,
    settings,
    senders,
):
    settings.READROOM_DICOMWEB_GRANT_SECONDS = 3
    verified = reader_client(reader)
    http = browser(server, verified)
    metadata, frames = urls(server, read_ct)
    frame = frames[0]
    assert http.get(metadata, headers={"Accept": "application/dicom+json"}).status_code == 200
    assert http.get(frame, headers={"Accept": OHIF}).status_code == 200  # the reader's grant is held

    # anonymous: 401 (no cookie), and a cookie naming no session: 401
    assert requests.get(frame, headers={"Accept": OHIF}, timeout=30).status_code == 401
    name = django_settings.SESSION_COOKIE_NAME
    forged = requests.get(frame, headers={"Accept": OHIF, "Cookie": f"{name}=no-such-session"}, timeout=30)
    assert forged.status_code == 401
    # another facility's reader: 404, as a study that does not exist
    from tests.conftest import enrol_totp

    enrol_totp(dr_msk_wi)
    other = reader_client(dr_msk_wi)
    assert browser(server, other).get(frame, headers={"Accept": OHIF}).status_code == 404
    # credentialing staff: 403
    staff = Client()
    staff.force_login(mso_mary)
    assert browser(server, staff).get(frame, headers={"Accept": OHIF}).status_code == 403
    # the same reader on another session without the second factor, while their grant is held: 403
    unverified = Client()
    unverified.force_login(reader)
    answer = browser(server, unverified).get(frame, headers={"Accept": OHIF})
    assert answer.status_code == 403 and b"second factor" in answer.content

    # the verified session locked: 423, unlocked: served again
    from django.contrib.sessions.backends.db import SessionStore

    store = SessionStore(verified.cookies[name].value)
    store[LOCKED_KEY] = True
    store.save()
    assert http.get(frame, headers={"Accept": OHIF}).status_code == 423
    del store[LOCKED_KEY]
    store.save()
    del senders[:]
    assert http.get(frame, headers={"Accept": OHIF}).status_code == 200
    assert senders == ["fast"]

    # the account deactivated: refused at once, grant or not (saved: the held sign-in hears of it)
    account = type(reader).objects.get(pk=reader.pk)
    account.is_active = False
    account.save(update_fields=["is_active"])
    assert http.get(frame, headers={"Accept": OHIF}).status_code in (401, 403)
    account.is_active = True
    account.save(update_fields=["is_active"])
    assert http.get(frame, headers={"Accept": OHIF}).status_code == 200

    # the privilege withdrawn: once the grant's window is over, 404 on every frame
    FacilityPrivilege.objects.filter(profile__user=reader).update(status=PrivilegeStatus.LAPSED)
    time.sleep(3.2)
    for url in frames:
        assert http.get(url, headers={"Accept": OHIF}).status_code == 404


# --- the held sign-in (web_signin) ------------------------------------------------------------------


def held_sign_in(server, study, user, senders) -> tuple[Client, requests.Session, list[str]]:
    """The reader's verified browser with the study open and their sign-in held by the fast path:
    a frame passed the whole chain, and a change recorded before it is past the clock's slack."""
    client = reader_client(user)
    http = browser(server, client)
    metadata, frames = urls(server, study)
    assert http.get(metadata, headers={"Accept": "application/dicom+json"}).status_code == 200
    time.sleep(web_signin.CLOCK_SLACK_SECONDS + 0.2)  # the sign-in's own saves are behind the hold
    del senders[:]
    assert http.get(frames[0], headers={"Accept": OHIF}).status_code == 200
    assert senders == ["fast"]
    key = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    assert [s.session_key for s in web_signin._SIGNINS.values()] == [key], "no sign-in held"
    return client, http, frames


def test_a_held_sign_in_serves_the_same_bytes_and_headers_as_the_view(
    server,
    read_ct,  # noqa: F811
    reader,  # noqa: F811
    settings,
    senders,
):
    # given a held sign-in
    _, http, frames = held_sign_in(server, read_ct, reader, senders)
    for url in frames:
        # when a frame is served under it, then through Django's view
        settings.READROOM_DICOMWEB_FAST_FRAMES = True
        del senders[:]
        held = http.get(url, headers={"Accept": OHIF})
        assert senders == ["fast"]
        settings.READROOM_DICOMWEB_FAST_FRAMES = False
        slow = http.get(url, headers={"Accept": OHIF})
        # then both are the same, header for header (Content-Length included) and byte for byte
        assert held.status_code == slow.status_code == 200
        assert normalised(held) == normalised(slow)


def _signed_out(client, user) -> None:
    client.logout()


def _locked(client, user) -> None:
    from django.contrib.sessions.backends.db import SessionStore

    store = SessionStore(client.cookies[django_settings.SESSION_COOKIE_NAME].value)
    store[LOCKED_KEY] = True
    store.save()


def _deactivated(client, user) -> None:
    user.is_active = False
    user.save(update_fields=["is_active"])


def _new_password(client, user) -> None:
    user.set_password("a-new-password-for-the-test")
    user.save()


def _roles_taken(client, user) -> None:
    user.groups.clear()


def _device_removed(client, user) -> None:
    from django_otp.plugins.otp_totp.models import TOTPDevice

    TOTPDevice.objects.filter(user=user).delete()


@pytest.mark.parametrize(
    "change, refused",
    [
        (_signed_out, {401}),
        (_locked, {423}),
        (_deactivated, {401, 403}),
        (_new_password, {401, 403}),
        (_roles_taken, {403, 404}),
        (_device_removed, {403}),
    ],
    ids=["signed out", "locked", "deactivated", "new password", "roles taken", "device removed"],
)
def test_a_held_sign_in_is_refused_at_once_after_a_change(
    server,
    read_ct,  # noqa: F811
    reader,  # noqa: F811
    settings,
    senders,
    change,
    refused,
):
    # given a held sign-in, its window far from over
    settings.READROOM_DICOMWEB_SIGNIN_SECONDS = 60
    client, http, frames = held_sign_in(server, read_ct, reader, senders)
    # when the session or the account changes (in the way the product changes it: model saves)
    change(client, type(reader).objects.get(pk=reader.pk))
    # then the next frame, and every one after, is refused as the view refuses it
    for url in frames:
        assert http.get(url, headers={"Accept": OHIF}).status_code in refused


def test_a_held_sign_in_is_never_anothers(
    server,
    read_ct,  # noqa: F811
    reader,  # noqa: F811
    dr_msk_wi,
    mso_mary,
    settings,
    senders,
):
    settings.READROOM_DICOMWEB_SIGNIN_SECONDS = 60
    # given the reader's held sign-in
    _, _, frames = held_sign_in(server, read_ct, reader, senders)
    # then another facility's reader, credentialing staff, an unverified session of the same
    # reader and a forged cookie are each refused as the view refuses them
    from tests.conftest import enrol_totp

    enrol_totp(dr_msk_wi)
    staff = Client()
    staff.force_login(mso_mary)
    unverified = Client()
    unverified.force_login(reader)
    name = django_settings.SESSION_COOKIE_NAME
    forged = requests.Session()
    forged.headers["Cookie"] = f"{name}=no-such-session"
    for session, status in (
        (browser(server, reader_client(dr_msk_wi)), 404),
        (browser(server, staff), 403),
        (browser(server, unverified), 403),
        (forged, 401),
    ):
        assert session.get(frames[0], headers={"Accept": OHIF}).status_code == status


def test_a_change_no_signal_tells_reaches_a_held_sign_in_within_its_window(
    server,
    read_ct,  # noqa: F811
    reader,  # noqa: F811
    settings,
    senders,
):
    # given a held sign-in with a 3-s window
    settings.READROOM_DICOMWEB_SIGNIN_SECONDS = 3
    _, http, frames = held_sign_in(server, read_ct, reader, senders)
    # when the account is deactivated without a model save (SQL by hand: no signal, no record)
    type(reader).objects.filter(pk=reader.pk).update(is_active=False)
    # then frames are still served within the window (the documented cost)...
    del senders[:]
    assert http.get(frames[1], headers={"Accept": OHIF}).status_code == 200
    assert senders == ["fast"]
    # ...and refused once it is over, on every frame
    time.sleep(3.2)
    for url in frames:
        assert http.get(url, headers={"Accept": OHIF}).status_code in (401, 403)


def test_with_the_window_0_a_sign_in_is_never_held(
    server,
    read_ct,  # noqa: F811
    reader,  # noqa: F811
    settings,
    senders,
):
    settings.READROOM_DICOMWEB_SIGNIN_SECONDS = 0
    http = browser(server, reader_client(reader))
    metadata, frames = urls(server, read_ct)
    assert http.get(metadata, headers={"Accept": "application/dicom+json"}).status_code == 200
    time.sleep(web_signin.CLOCK_SLACK_SECONDS + 0.2)
    del senders[:]
    assert http.get(frames[0], headers={"Accept": OHIF}).status_code == 200
    assert senders == ["fast"] and not web_signin._SIGNINS
    # a change no signal tells is refused at once
    type(reader).objects.filter(pk=reader.pk).update(is_active=False)
    assert http.get(frames[1], headers={"Accept": OHIF}).status_code in (401, 403)


def test_a_held_sign_in_leaves_the_audit_row_to_the_whole_chain(
    server,
    read_ct,  # noqa: F811
    reader,  # noqa: F811
    settings,
    senders,
):
    # given a held sign-in and a 1-s audit window for frames
    settings.READROOM_AUDIT_FRAME_WINDOW_SECONDS = 1
    settings.READROOM_DICOMWEB_SIGNIN_SECONDS = 60
    _, http, frames = held_sign_in(server, read_ct, reader, senders)

    def frame_rows():
        rows = LogEntry.objects.filter(action=LogEntry.Action.ACCESS, object_pk=str(read_ct.pk))
        return [r for r in rows if (r.additional_data or {}).get("read", {}).get("kind") == "dicomweb-frames"]

    before = len(frame_rows())
    # when the audit window has passed and the viewer asks again
    time.sleep(1.2)
    assert http.get(frames[1], headers={"Accept": OHIF}).status_code == 200
    # then one new row, with the reader as actor and their address (written through the chain)
    rows = frame_rows()
    assert len(rows) == before + 1
    newest = max(rows, key=lambda r: r.pk)
    assert newest.actor_id == reader.pk and newest.remote_addr == "127.0.0.1"


def test_a_file_resent_while_its_row_is_held_is_served_as_it_is_now(
    server,
    read_ct,  # noqa: F811
    reader,  # noqa: F811
    settings,
    senders,
):
    # given a held sign-in, whose frames came from the study's held rows
    settings.READROOM_DICOMWEB_SIGNIN_SECONDS = 60
    _, http, frames = held_sign_in(server, read_ct, reader, senders)
    assert http.get(frames[0], headers={"Accept": OHIF}).status_code == 200
    assert web_access._ROWS, "the study's rows are not held"
    # when a slice is re-sent RLE-compressed (same SOP instance, file and row rewritten)
    first = Instance.objects.filter(series__study=read_ct).order_by("id").first()
    from imaging.storage import encrypted_read

    ds = dcmread(BytesIO(encrypted_read(first.storage_path)))
    ds.compress(RLELossless, generate_instance_uid=False)
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    assert dicom_instance_receive(facility=read_ct.facility, part10=buffer.getvalue()).ok
    assert Instance.objects.get(pk=first.pk).transfer_syntax_uid == RLELossless
    # then the held path sends the new file's RLE bitstream, as the view does
    del senders[:]
    held = http.get(frames[0], headers={"Accept": OHIF})
    assert senders == ["fast"]
    settings.READROOM_DICOMWEB_FAST_FRAMES = False
    slow = http.get(frames[0], headers={"Accept": OHIF})
    assert held.status_code == slow.status_code == 200
    assert b"1.2.840.10008.1.2.5" in held.content
    assert normalised(held) == normalised(slow)
