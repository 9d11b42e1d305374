"""The MLLP edge under hostile or careless clients (issue #15): a sender outside its facility's
allow-list is answered AR and disconnected, one address cannot hold every connection, and MLLP
runs over TLS both ways (the listener, and the ORU to a TLS interface engine)."""

from __future__ import annotations

import asyncio
import ssl
import time

import hl7
import pytest
from hl7.mllp import open_hl7_connection

from interfaces.hl7.inbound import sender_cache_clear
from interfaces.hl7.outbound import outbox_deliver
from interfaces.models import InboundMessage, InboundStatus, OutboundMessage, OutboundStatus
from interfaces.tls import server_tls_context
from tests import hl7_data
from tests.interfaces.conftest import applied, hl7_listener_running
from tests.interfaces.fake_emr import FakeEmr, always
from tests.interfaces.test_hl7_listener import err_code, msa
from tests.interfaces.test_outbox import report_queue
from tests.tls_certs import tls_files_write

pytestmark = pytest.mark.django_db(transaction=True)


async def _send(reader, writer, frame: str, timeout: float = 10) -> hl7.Message | None:
    """One frame and its ACK; None when the listener closed the connection instead (a reset when
    it closed with this frame unread in its buffer)."""
    try:
        writer.writeblock(frame.encode())
        await writer.drain()
        block = await asyncio.wait_for(reader.readblock(), timeout)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return hl7.parse(block.decode()) if block else None


def _exchange(address, *frames: str, **connect) -> list[hl7.Message | None]:
    """Frames on one connection (``connect``: open_connection's ssl=, local_addr=…); their ACKs,
    None for each one after the listener closed the connection."""

    async def run():
        reader, writer = await open_hl7_connection(*address, **connect)
        acks = []
        for frame in frames:
            acks.append(None if reader.at_eof() else await _send(reader, writer, frame))
        writer.close()
        return acks

    return asyncio.run(run())


@pytest.fixture
def tls_files(tmp_path_factory):
    return tls_files_write(tmp_path_factory.mktemp("tls"))


def test_a_sender_outside_its_allow_list_gets_ar_and_is_disconnected(chicago_interfaces):
    chicago_interfaces.hl7_allowed_networks = ["127.0.0.2/32"]
    chicago_interfaces.save()
    sender_cache_clear()
    with hl7_listener_running() as address:
        refused, after = _exchange(address, hl7_data.orm(accession="A7001"), hl7_data.orm(accession="A7002"))
        # then the frame is answered AR 204 with the reason, and the connection is closed
        assert msa(refused)[0] == "AR" and err_code(refused) == "204"
        assert "address 127.0.0.1 not in CHI-L1's HL7 allow-list" in str(refused)
        assert after is None
        # and what came is kept, with why it was refused (the audit trail of the attempt)
        row = InboundMessage.objects.get()
        assert row.status == InboundStatus.REJECTED and row.peer.startswith("127.0.0.1:")
        assert "address 127.0.0.1 not in CHI-L1's HL7 allow-list" in row.error
        # from an allowed network the same sender is accepted
        chicago_interfaces.hl7_allowed_networks = ["127.0.0.0/8"]
        chicago_interfaces.save()
        sender_cache_clear()
        (accepted,) = _exchange(address, hl7_data.orm(accession="A7003"))
        assert msa(accepted)[0] == "AA"
        applied()


def test_one_address_cannot_hold_every_connection(chicago_interfaces, settings):
    settings.READROOM_HL7_MAX_CONNECTIONS_PER_PEER = 2

    async def run(address):
        held = [await open_hl7_connection(*address) for _ in range(2)]
        for reader, writer in held:  # both are served
            assert msa(await _send(reader, writer, hl7_data.orm()))[0] == "AA"
        # a third connection from the same address is closed before anything is read
        reader, writer = await open_hl7_connection(*address)
        assert await _send(reader, writer, hl7_data.orm()) is None
        writer.close()
        # while another address (another hospital's engine) is still answered
        reader, writer = await open_hl7_connection(*address, local_addr=("127.0.0.2", 0))
        assert msa(await _send(reader, writer, hl7_data.orm()))[0] == "AA"
        writer.close()
        # and once one of the first closes, the first address may connect again
        held[0][1].close()
        await held[0][1].wait_closed()
        await asyncio.sleep(0.2)  # the listener sees the close on its next read
        reader, writer = await open_hl7_connection(*address)
        assert msa(await _send(reader, writer, hl7_data.orm()))[0] == "AA"
        writer.close()
        held[1][1].close()

    with hl7_listener_running() as address:
        asyncio.run(run(address))
        applied()
    assert InboundMessage.objects.filter(ack_code="AA").count() == 4


def test_mllp_over_tls_is_acked_and_plain_or_untrusted_clients_are_not(chicago_interfaces, tls_files):
    server = server_tls_context(str(tls_files.server_cert), str(tls_files.server_key), str(tls_files.ca))
    client = ssl.create_default_context(cafile=str(tls_files.ca))
    client.load_cert_chain(str(tls_files.client_cert), str(tls_files.client_key))
    with hl7_listener_running(ssl_context=server) as address:
        (ack,) = _exchange(address, hl7_data.orm(accession="A7101"), ssl=client, server_hostname="localhost")
        assert msa(ack)[0] == "AA"
        applied()
        # plain MLLP to the TLS port: no ACK, nothing stored
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError, TimeoutError)):
            asyncio.run(_plain_then_read(address))
        # a client without a certificate from the trusted CA is refused: in TLS 1.3 the server
        # checks the client's certificate after the client's side of the handshake is done, so the
        # client learns it on its first read (an alert), not on connect
        anonymous = ssl.create_default_context(cafile=str(tls_files.ca))
        try:
            acks = _exchange(
                address, hl7_data.orm(accession="A7102"), ssl=anonymous, server_hostname="localhost"
            )
        except (ssl.SSLError, ConnectionError):
            acks = [None]
        assert acks == [None]
    # only the TLS client with its certificate got a frame stored
    assert InboundMessage.objects.get().ack_code == "AA"


async def _plain_then_read(address) -> None:
    reader, writer = await open_hl7_connection(*address)
    writer.writeblock(hl7_data.orm(accession="A7103").encode())
    await writer.drain()
    block = await asyncio.wait_for(reader.readblock(), 5)
    raise AssertionError(f"a plain frame was answered on the TLS port: {block!r}")


def test_the_oru_is_delivered_over_tls(chicago_interfaces, tls_files):
    emr_tls = server_tls_context(str(tls_files.server_cert), str(tls_files.server_key))
    fake = FakeEmr(always("AA"), tls=emr_tls).start()
    try:
        facility = chicago_interfaces
        facility.hl7_outbound_host, facility.hl7_outbound_port = "127.0.0.1", fake.port
        # first with a CA that did not sign the EMR's certificate: refused, nothing sent in clear
        facility.hl7_outbound_tls = {"ca_file": str(tls_files.other_ca)}
        facility.save()
        report_queue(facility, 1)
        assert outbox_deliver(facility_id=facility.pk) == 0
        head = OutboundMessage.objects.get()
        assert head.status == OutboundStatus.QUEUED and "TLS" in head.last_error
        assert "CERTIFICATE_VERIFY_FAILED" in head.last_error and fake.received == []
        # then with the right CA (the engine named by its address, which its certificate carries)
        facility.hl7_outbound_tls = {"ca_file": str(tls_files.ca)}
        facility.save()
        OutboundMessage.objects.update(next_attempt_at=head.queued_at)
        assert outbox_deliver(facility_id=facility.pk) == 1
        assert fake.received == [head.control_id]
        assert OutboundMessage.objects.get().status == OutboundStatus.ACKED
    finally:
        fake.stop()


def test_a_missing_certificate_file_is_a_failed_attempt_not_a_crash(chicago_interfaces, tmp_path):
    facility = chicago_interfaces
    facility.hl7_outbound_host, facility.hl7_outbound_port = "127.0.0.1", 9
    facility.hl7_outbound_tls = {"ca_file": str(tmp_path / "missing.pem")}
    facility.save()
    report_queue(facility, 1)
    assert outbox_deliver(facility_id=facility.pk) == 0
    head = OutboundMessage.objects.get()
    assert head.attempts == 1 and head.last_error.startswith("TLS configuration:")


def test_a_senders_message_pace_spaces_its_frames_across_connections_and_refuses_none(chicago_interfaces):
    """Facility.hl7_max_messages_per_minute: the listener reads the sender's next frame later (MLLP
    waits for each ACK), across all its connections; every message is still stored and ACKed AA."""

    async def two_connections(address, accessions: list[str]) -> tuple[float, list[str]]:
        async def one(batch: list[str]) -> list[str]:
            reader, writer = await open_hl7_connection(*address)
            codes = [msa(await _send(reader, writer, hl7_data.orm(accession=a)))[0] for a in batch]
            writer.close()
            return codes

        started = asyncio.get_running_loop().time()
        first, second = await asyncio.gather(one(accessions[:3]), one(accessions[3:]))
        return asyncio.get_running_loop().time() - started, first + second

    with hl7_listener_running() as address:
        # given no pace (the default): six messages on two connections come in at once
        free, codes = asyncio.run(two_connections(address, [f"P80{i}" for i in range(6)]))
        assert codes == ["AA"] * 6
        # when the facility paces its senders at 120 a minute (one every 0.5 s)
        chicago_interfaces.hl7_max_messages_per_minute = 120
        chicago_interfaces.save()
        sender_cache_clear()
        paced, codes = asyncio.run(two_connections(address, [f"P81{i}" for i in range(6)]))
        applied()
        time.sleep(1.2)  # the listener reads each connection's end after its last pause
    # then the same six take at least four intervals (the two connections share one pace) ...
    assert paced >= 1.9, paced
    assert paced > free + 1.0, (free, paced)
    # ... and none was refused: all ACKed AA and stored
    assert codes == ["AA"] * 6
    assert InboundMessage.objects.filter(ack_code="AA").count() == 12
