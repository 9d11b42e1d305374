"""Issue #15 item 2: what the message itself shows is checked before the ACK, over a real MLLP
connection: control characters and over-long values get AE with ERR-3 (table 0357) and the
location, the raw frame is kept, nothing is truncated, and the sender's next order goes on."""

from __future__ import annotations

import pytest

from imaging.models import Order
from interfaces.models import InboundMessage, InboundStatus
from tests import hl7_data
from tests.interfaces.test_hl7_listener import err_code, exchange, msa

pytestmark = pytest.mark.django_db(transaction=True)


def err_location(ack) -> str:
    """ERR-2 (v2.5+): segment^sequence^field."""
    return "^".join(str(ack.extract_field("ERR", 1, 2, 1, n)) for n in (1, 2, 3))


@pytest.mark.parametrize(
    ("frame", "location", "text"),
    [
        (
            hl7_data.orm(control_id="BAD-NUL", version="2.5.1").replace("QUINLAN", "QUIN\x00LAN"),
            "PID^1^5",
            "control character 0x00 in PID-5",
        ),
        (
            hl7_data.orm(control_id="BAD-LONG", version="2.5.1").replace("QUINLAN", "Q" * 300),
            "PID^1^5",
            "family name is 300 characters, more than the 100 allowed",
        ),
        (
            hl7_data.orm(control_id="BAD-ACC", version="2.5.1", accession="A" * 17),
            "OBR^1^18",
            "accession number is 17 characters, more than the 16 allowed",
        ),
    ],
    ids=["nul-in-name", "300-char-family-name", "17-char-accession"],
)
def test_bad_values_get_ae_102_with_location_and_the_next_order_goes_on(hl7_listener, frame, location, text):
    good = hl7_data.orm(control_id="GOOD-AFTER", accession="A7001", version="2.5.1")
    bad_ack, good_ack = exchange(hl7_listener, frame, good)
    control_id = frame.split("\r")[0].split("|")[9]
    # AE, MSA-2 = MSH-10, ERR-3 = 102 (data type error) with ERR-2 pointing at the field
    assert msa(bad_ack) == ("AE", control_id)
    assert err_code(bad_ack) == "102"
    assert err_location(bad_ack) == location
    assert text in str(bad_ack.segment("ERR")[8])
    # MSH-5/6 name the sender
    assert (str(bad_ack.extract_field("MSH", 1, 5)), str(bad_ack.extract_field("MSH", 1, 6))) == (
        "EPIC_RAD",
        "LAKESHORE",
    )
    # the raw frame is kept as rejected; no order, and certainly no truncated accession
    kept = InboundMessage.objects.get(control_id=control_id)
    assert kept.status == InboundStatus.REJECTED and kept.error_code == "102"
    assert bytes(kept.raw) == frame.encode()
    assert not Order.objects.filter(accession_number__startswith="AAAAAAAA").exists()
    # the sender's next order is accepted and applied
    assert msa(good_ack) == ("AA", "GOOD-AFTER")
    assert Order.objects.filter(accession_number="A7001").exists()


def test_v23_location_goes_in_err_1(hl7_listener):
    frame = hl7_data.orm(control_id="V23-LONG", version="2.3", accession="B" * 20)
    (ack,) = exchange(hl7_listener, frame)
    assert msa(ack) == ("AE", "V23-LONG")
    assert [str(ack.extract_field("ERR", 1, 1, 1, n)) for n in (1, 2, 3)] == ["OBR", "1", "18"]
    assert str(ack.extract_field("ERR", 1, 1, 1, 4)) == "102"


def test_over_long_fallback_accession_is_refused_not_cut(hl7_listener, chicago_interfaces):
    chicago = chicago_interfaces
    chicago.hl7_accession_fallback = "filler"
    chicago.save(update_fields=["hl7_accession_fallback"])
    from interfaces.hl7.inbound import sender_cache_clear

    sender_cache_clear()
    frame = hl7_data.orm(control_id="FB-LONG", version="2.5.1", accession="", filler="F" * 20)
    (ack,) = exchange(hl7_listener, frame)
    assert msa(ack) == ("AE", "FB-LONG") and err_code(ack) == "102"
    assert err_location(ack) == "ORC^1^3"
    assert not Order.objects.exists()
