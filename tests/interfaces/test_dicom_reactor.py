"""interfaces.dicom.reactor: the SCP's associations wait for their socket and queues instead of
pynetdicom's 1 ms polling. Pins the pynetdicom functions the patch copies or wraps, so an upgrade
fails here, and shows the patched associations idle quietly and still store, release and abort.
And the SCP's own File Meta Information encoding (interfaces.dicom.header.part10_file_meta) is
pynetdicom's, byte for byte."""

from __future__ import annotations

import socket
import struct
import threading
import time
from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pynetdicom import AE, Association
from pynetdicom.sop_class import CTImageStorage, Verification

from imaging.models import Instance
from interfaces.dicom import reactor
from interfaces.dicom.scp import storage_scp
from interfaces.models import DicomAssociation
from interfaces.supervisor import listening_socket
from tests.interfaces.test_dicom_edges import scp_running
from tests.interfaces.test_dicom_scp import write_series
from tests.net import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_pynetdicom_it_patches_is_the_one_it_was_written_for():
    # given pynetdicom as installed / then every function the patch copies or wraps is unchanged.
    # If this fails: read the changed functions against WakingDUL / WakingAssociation /
    # ReadIntoSocket, carry the change into the copies (or drop the patch if upstream stopped
    # polling), and only then put the new hashes into reactor.UPSTREAM_SOURCES.
    assert reactor.upstream_changed() == []


def test_a_changed_pynetdicom_keeps_its_own_reactors(monkeypatch):
    # given one pinned function whose source no longer matches
    monkeypatch.setitem(reactor.UPSTREAM_SOURCES, "Association._run_reactor", "0" * 64)
    reactor._patch_applies.cache_clear()
    try:
        assoc = Association(AE(), "acceptor")
        # when the SCP would install the patch
        reactor.wake_on_work(assoc)
        # then the association stays pynetdicom's, polling but correct
        assert type(assoc) is Association and type(assoc.dul).__name__ == "DULServiceProvider"
    finally:
        reactor._patch_applies.cache_clear()


def _turns(monkeypatch) -> dict[str, int]:
    """Counts the patched threads' waits (one per turn of each reactor loop)."""
    counts = {"association": 0, "dul": 0}
    for owner, key in ((reactor.WakingAssociation, "association"), (reactor.WakingDUL, "dul")):
        wait = owner._wait_for_work

        def counted(self, _wait=wait, _key=key):
            counts[_key] += 1
            _wait(self)

        monkeypatch.setattr(owner, "_wait_for_work", counted)
    return counts


def _scu(port: int) -> Association:
    ae = AE(ae_title="LAKESHORE_CT1")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    ae.acse_timeout = ae.dimse_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="READROOM")
    assert assoc.is_established
    return assoc


def test_an_idle_association_sleeps_instead_of_polling(chicago_interfaces, monkeypatch):
    turns = _turns(monkeypatch)
    with scp_running() as (server, port):
        # given an established association, accepted by the patched reactors
        assoc = _scu(port)
        (accepted,) = server.active_associations
        assert isinstance(accepted, reactor.WakingAssociation)
        assert isinstance(accepted.dul, reactor.WakingDUL)
        assert isinstance(accepted.dul.socket, reactor.ReadIntoSocket)
        before = dict(turns)
        # when it sends nothing for a second
        time.sleep(1.0)
        idle = {key: turns[key] - before[key] for key in turns}
        # then each thread looked about 1 / IDLE_WAIT times (pynetdicom's polled ~1,000 times each)
        assert 0 < idle["association"] <= 2 / reactor.IDLE_WAIT, idle
        assert 0 < idle["dul"] <= 2 / reactor.IDLE_WAIT, idle
        # and an echo is answered at once, not after an idle wait
        started = time.monotonic()
        assert assoc.send_c_echo().Status == 0x0000
        assert time.monotonic() - started < reactor.IDLE_WAIT
        assoc.release()


def test_a_patched_association_stores_then_releases(chicago_interfaces, image_store, tmp_path):
    _, paths = write_series(tmp_path, slices=6)
    from pydicom import dcmread

    with scp_running() as (server, port):
        assoc = _scu(port)
        statuses = [assoc.send_c_store(dcmread(path)).Status for path in paths]
        assoc.release()
        # then every image is stored and indexed, and the association ends as pynetdicom's does
        assert statuses == [0x0000] * 6
        assert Instance.objects.count() == 6
        wait_until(lambda: not server.active_associations, timeout=5, message="association still open")
        row = DicomAssociation.objects.get(calling_ae_title="LAKESHORE_CT1")
        wait_until(lambda: DicomAssociation.objects.get(pk=row.pk).ended_at, timeout=5)
        assert DicomAssociation.objects.get(pk=row.pk).instances_stored == 6


def test_a_peer_abort_ends_the_patched_association_at_once(chicago_interfaces):
    with scp_running() as (server, port):
        assoc = _scu(port)
        (accepted,) = server.active_associations
        # when the modality aborts
        started = time.monotonic()
        assoc.abort()
        # then both threads notice without waiting for their idle timeout
        wait_until(lambda: not accepted.is_alive() and not accepted.dul.is_alive(), timeout=5)
        assert accepted.is_aborted
        assert time.monotonic() - started < 1.0
        wait_until(
            lambda: DicomAssociation.objects.filter(calling_ae_title="LAKESHORE_CT1", ended_at__isnull=False),
            timeout=5,
        )


def test_the_switch_off_keeps_pynetdicoms_reactors(chicago_interfaces, settings):
    settings.READROOM_DICOM_REACTOR_WAKE = False
    with scp_running() as (server, port):
        assoc = _scu(port)
        (accepted,) = server.active_associations
        assert type(accepted) is Association
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()


# --- a request already waiting in the socket when the association starts --------------------------
# A raw client, so the bytes' timing is the test's, not an SCU's: the A-ASSOCIATE-RQ is in the
# connection's receive buffer before any server exists to accept it (as when a replacement child
# starts with connections queued on the shared socket). IDLE_WAIT is raised to 30 s, so a wake-up
# that was lost — select() waiting for new data while the request sits in the socket or the queues —
# would hold the answer for 30 s instead of 50 ms: every answer is required within 3 s.

A_ASSOCIATE_AC, P_DATA_TF, A_RELEASE_RP = 0x02, 0x04, 0x06
A_RELEASE_RQ = struct.pack(">BBLL", 0x05, 0, 4, 0)


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        got = sock.recv(size - len(data))
        assert got, f"connection closed after {len(data)} of {size} bytes"
        data += got
    return bytes(data)


def _pdu(sock: socket.socket) -> tuple[int, bytes]:
    kind, _, length = struct.unpack(">BBL", _exactly(sock, 6))
    return kind, _exactly(sock, length)


def _association_request(calling: str) -> bytes:
    """pynetdicom's own A-ASSOCIATE-RQ (Verification, presentation context 1), as an SCU sends it,
    caught by a socket that reads it and hangs up."""
    caught: list[bytes] = []
    with socket.create_server(("127.0.0.1", 0)) as catcher:

        def catch() -> None:
            conn, _ = catcher.accept()
            with conn:
                header = _exactly(conn, 6)
                caught.append(header + _exactly(conn, struct.unpack(">L", header[2:])[0]))

        thread = threading.Thread(target=catch)
        thread.start()
        ae = AE(ae_title=calling)
        ae.add_requested_context(Verification)
        ae.acse_timeout = 2
        ae.associate("127.0.0.1", catcher.getsockname()[1], ae_title="READROOM")
        thread.join(5)
    assert caught and caught[0][0] == 0x01
    return caught[0]


def _echo_request(message_id: int) -> bytes:
    """A P-DATA-TF with one C-ECHO-RQ command (implicit VR little endian, context 1, last fragment)."""
    command = Dataset()
    command.AffectedSOPClassUID = Verification
    command.CommandField = 0x0030
    command.MessageID = message_id
    command.CommandDataSetType = 0x0101
    body = _implicit_le(command)
    group = struct.pack("<HHLL", 0x0000, 0x0000, 4, len(body)) + body
    pdv = struct.pack(">LBB", len(group) + 2, 1, 0x03) + group
    return struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv


def _implicit_le(ds: Dataset) -> bytes:
    from pydicom.filebase import DicomBytesIO

    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, True
    write_dataset(out, ds)
    return out.getvalue()


def _status(p_data: bytes) -> int:
    command = read_dataset(BytesIO(p_data[6:]), is_implicit_VR=True, is_little_endian=True)
    return command.Status


@pytest.mark.parametrize("wake", [True, False], ids=["patched", "pynetdicoms"])
def test_a_request_already_in_the_socket_when_the_association_starts_is_answered_at_once(
    chicago_interfaces, monkeypatch, settings, wake
):
    settings.READROOM_DICOM_REACTOR_WAKE = wake  # pynetdicom's polling reactors: the comparison
    monkeypatch.setattr(reactor, "IDLE_WAIT", 30.0)
    request = _association_request("LAKESHORE_CT1")
    shared = listening_socket("127.0.0.1", 0)  # the supervisor's socket: non-blocking, as children share it
    port = shared.getsockname()[1]
    try:
        for round_ in range(8):
            # given connections whose whole A-ASSOCIATE-RQ is sent before anything accepts them
            # (one in two pieces: the header alone, then the rest)
            clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
            for n, client in enumerate(clients):
                client.settimeout(3.0)
                if n == 3:
                    client.sendall(request[:6])
                    client.sendall(request[6:])
                else:
                    client.sendall(request)
            # when a server starts on the socket (as a forked child does)
            server = storage_scp().start("127.0.0.1", 0, listening=shared.dup())
            try:
                for n, client in enumerate(clients):
                    # then each is accepted, and answered well within the (raised) idle wait
                    started = time.monotonic()
                    assert _pdu(client)[0] == A_ASSOCIATE_AC, (round_, n)
                    client.sendall(_echo_request(1))
                    kind, body = _pdu(client)
                    assert (kind, _status(body)) == (P_DATA_TF, 0x0000), (round_, n)
                    client.sendall(A_RELEASE_RQ)
                    assert _pdu(client)[0] == A_RELEASE_RP, (round_, n)
                    assert time.monotonic() - started < 3.0
            finally:
                for client in clients:
                    client.close()
                wait_until(lambda s=server: not s.active_associations, timeout=5)
                server.shutdown()
                server.server_close()
    finally:
        shared.close()


def test_a_pdu_is_read_whole_into_one_buffer_or_what_came_before_the_close():
    ours, peer = socket.socketpair()
    try:
        sock = reactor.ReadIntoSocket.__new__(reactor.ReadIntoSocket)
        sock.socket = ours
        payload = bytes(range(256)) * 1024  # 256 KB, sent in pieces from another thread
        sender = threading.Thread(
            target=lambda: [peer.sendall(payload[i : i + 10_000]) for i in range(0, len(payload), 10_000)]
        )
        sender.start()
        assert sock.recv(len(payload)) == payload
        sender.join()
        # a peer that closes mid-PDU: the bytes read so far, as pynetdicom's own recv returns them
        peer.sendall(b"abc")
        peer.close()
        assert sock.recv(10) == b"abc"
    finally:
        ours.close()


@pytest.mark.parametrize(
    ("sop_class", "sop_instance", "syntax"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5.6.7.8.9.10", "1.2.840.10008.1.2.1"),  # odd, even, odd
        ("1.2.840.10008.5.1.4.1.1.128", "2.25.1234567890123456789012345678901234567", "1.2.840.10008.1.2"),
        ("1.2.840.10008.5.1.4.1.1.4", "1.2", "1.2.840.10008.1.2.4.70"),
    ],
)
def test_the_file_meta_is_byte_for_byte_pynetdicoms(sop_class, sop_instance, syntax):
    # given what pynetdicom's event.encoded_dataset() puts before a received data set
    from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
    from pynetdicom.dsutils import create_file_meta, encode_file_meta

    from interfaces.dicom.header import part10_file_meta

    theirs = encode_file_meta(
        create_file_meta(sop_class_uid=sop_class, sop_instance_uid=sop_instance, transfer_syntax=syntax)
    )
    # when the SCP encodes it itself / then the bytes are the same
    ours = part10_file_meta(
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        transfer_syntax_uid=syntax,
        implementation_uid=PYNETDICOM_IMPLEMENTATION_UID,
        implementation_version=PYNETDICOM_IMPLEMENTATION_VERSION,
    )
    assert ours == b"\x00" * 128 + b"DICM" + theirs


def test_a_file_meta_value_that_is_not_ascii_is_left_to_pynetdicom():
    from interfaces.dicom.header import part10_file_meta

    with pytest.raises(ValueError):
        part10_file_meta(
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            sop_instance_uid="1.2.3.\u00e9",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            implementation_uid="1.2.3",
            implementation_version="X",
        )
