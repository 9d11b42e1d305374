"""MSH-15/MSH-16 enhanced mode (HL7 v2.5.1 §2.9.3, table 0155): the commit ACK (CA) at once, then —
after the message was applied — the application ACK (AA / AE) as MSH-16 asks, sent back through the
outbox to the hospital's HL7 endpoint. Real MLLP both ways: the listener, and a fake EMR answering."""

from __future__ import annotations

import time

import hl7
import pytest

from facilities.models import Hl7Sender
from imaging.models import Order
from interfaces.hl7.inbound import sender_cache_clear
from interfaces.hl7.parse import encode
from interfaces.models import OutboundMessage, OutboundStatus
from tests import hl7_data
from tests.interfaces.conftest import applied
from tests.interfaces.fake_emr import FakeEmr, always
from tests.interfaces.test_hl7_dead_letter import _stored_poison
from tests.interfaces.test_hl7_listener import exchange, msa
from tests.interfaces.test_order_updates import _raw_exchange

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def emr(chicago_interfaces):
    server = FakeEmr(always("CA")).start()  # it commits our ACKs, as an enhanced-mode engine does
    chicago_interfaces.hl7_outbound_host, chicago_interfaces.hl7_outbound_port = "127.0.0.1", server.port
    chicago_interfaces.save()
    yield server
    server.stop()


def _app_acks(emr: FakeEmr, count: int, timeout: float = 10) -> list[hl7.Message]:
    deadline = time.monotonic() + timeout
    while len(emr.messages) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # and nothing more than expected comes
    return [hl7.parse(text) for text in emr.messages]


def _order(n: int, app_ack: str, accept_ack: str = "AL") -> str:
    return hl7_data.orm(
        accept_ack=accept_ack, app_ack=app_ack, control_id=f"APP-{n}", accession=f"A83{n:02d}",
        placer=f"P83{n:02d}", filler=f"F83{n:02d}",
    )  # fmt: skip


def test_application_acks_follow_msh16_after_the_order_is_applied(hl7_listener, emr):
    # when the RIS sends orders asking AL, NE, SU, ER for the application ACK, and one in original mode
    frames = [_order(1, "AL"), _order(2, "NE"), _order(3, "SU"), _order(4, "ER"), _order(5, "", "")]
    acks = exchange(hl7_listener, *frames)
    # then each gets its commit ACK at once (the original-mode one its AA)
    assert [msa(a) for a in acks] == [
        ("CA", "APP-1"),
        ("CA", "APP-2"),
        ("CA", "APP-3"),
        ("CA", "APP-4"),
        ("AA", "APP-5"),
    ]
    # and, once applied, AL and SU get an application ACK AA; NE, ER (no error) and original mode none
    app_acks = _app_acks(emr, 2)
    assert [(str(m.segment("MSA")[1]), str(m.segment("MSA")[2])) for m in app_acks] == [
        ("AA", "APP-1"),
        ("AA", "APP-3"),
    ]
    assert Order.objects.filter(accession_number__startswith="A83").count() == 5
    first = app_acks[0].segment("MSH")
    # an application ACK is itself a message that wants a commit ACK back (MSH-15 AL, MSH-16 NE)
    assert (str(first[9]), str(first[15]), str(first[16])) == ("ACK^O01", "AL", "NE")
    assert (str(first[5]), str(first[6])) == ("EPIC_RAD", "LAKESHORE")
    sent = OutboundMessage.objects.filter(kind="ACK").order_by("sequence")
    assert [m.source.startswith("hl7-app-ack:") for m in sent] == [True, True]
    deadline = time.monotonic() + 5
    while sent.exclude(status=OutboundStatus.ACKED).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(sent.values_list("status", flat=True)) == {OutboundStatus.ACKED}


def test_a_message_that_cannot_be_applied_gets_ae_when_msh16_asks_for_errors(
    hl7_listener, emr, chicago_interfaces
):
    # given two stored orders that cannot be applied (NUL in the name), one asking ER and one SU
    poison_pid = hl7_data.pid(family="QUIN\x00LAN")
    for n, app_ack in ((1, "ER"), (2, "SU")):
        text = hl7_data.orm(
            accept_ack="AL", app_ack=app_ack, control_id=f"POISON-{n}", accession=f"POISON{n}",
            placer=f"PP{n}", filler=f"FP{n}",
        ).replace(hl7_data.pid(), poison_pid)  # fmt: skip
        _stored_poison(chicago_interfaces, text, f"POISON-{n}")
    # when the next order arrives and the sender's queue is drained
    exchange(hl7_listener, hl7_data.orm(accession="A8401", control_id="NEXT-1"))
    # then the ER one gets an application ACK AE with the reason (ERR 207); the SU one nothing
    (app_ack,) = _app_acks(emr, 1)
    assert (str(app_ack.segment("MSA")[1]), str(app_ack.segment("MSA")[2])) == ("AE", "POISON-1")
    assert "207" in str(app_ack.segment("ERR")) and "DataError" in str(app_ack.segment("MSA")[3]) + str(
        app_ack.segment("ERR")
    )


def test_the_application_ack_is_sent_in_the_character_set_of_the_order(hl7_listener, emr, chicago_interfaces):
    # given a German RIS that sends ISO 8859-1 (MSH-18 8859/1) and names itself with umlauts
    Hl7Sender.objects.create(
        facility=chicago_interfaces, sending_application="KIS_MÜNCHEN", sending_facility="KLINIKUM_SÜD"
    )
    sender_cache_clear()
    order = hl7_data.orm(
        accept_ack="AL", app_ack="AL", control_id="LATIN-1", accession="A8501", placer="P8501",
        filler="F8501", sender=("KIS_MÜNCHEN", "KLINIKUM_SÜD"), charset="8859/1",
    ).replace(hl7_data.pid(), hl7_data.pid(family="MÜLLER", given="JOSÉ"))  # fmt: skip
    # when the order is sent over MLLP as Latin-1 bytes
    ack = _raw_exchange(hl7_listener, b"\x0b" + order.encode("latin-1") + b"\x1c\r")
    applied()
    # then its commit ACK is Latin-1 already, and the name was read right
    assert "KLINIKUM_SÜD".encode("latin-1") in ack and "MSA|CA|LATIN-1" in ack.decode("latin-1")
    stored = Order.objects.select_related("patient").get(accession_number="A8501")
    assert (stored.patient.family_name, stored.patient.given_name) == ("MÜLLER", "JOSÉ")
    # and the application ACK reaches the EMR in the same set, saying so in its MSH-18
    (app_ack,) = _app_acks(emr, 1)
    frame = emr.frames[0]
    assert "KLINIKUM_SÜD".encode("latin-1") in frame and "KLINIKUM_SÜD".encode() not in frame
    msh = app_ack.segment("MSH")
    assert (str(msh[5]), str(msh[6]), str(msh[18])) == ("KIS_MÜNCHEN", "KLINIKUM_SÜD", "8859/1")
    assert (str(app_ack.segment("MSA")[1]), str(app_ack.segment("MSA")[2])) == ("AA", "LATIN-1")
    # and the outbox keeps the text it sent, which encodes back to exactly those bytes
    sent = OutboundMessage.objects.get(kind="ACK")
    assert encode(sent.payload) == frame
