"""Issue #15 item 1: one bad HL7 message never stops a hospital's order feed.

A message that cannot be applied (here: stored by a version before validate-before-ACK, with a NUL
byte or a 300-character family name that the database refuses) is set aside as a dead letter with
its error and attempt count; the sender's later orders, sent over a real MLLP connection, are all
applied; operations are alerted and decide (reprocess or discard, with a reason)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from imaging.models import Order
from interfaces.hl7.inbound import hl7_inbound_drain, inbound_message_discard
from interfaces.models import InboundMessage, InboundStatus, InterfaceAlert
from tests import hl7_data
from tests.ai.test_ai_sr_scp import wait_for
from tests.interfaces.test_health import listen_operations, next_event
from tests.interfaces.test_hl7_listener import exchange, msa

pytestmark = pytest.mark.django_db(transaction=True)


def _stored_poison(chicago, raw: str, control_id: str) -> InboundMessage:
    """A frame ACKed AA and stored as the listener stored it before this release (the 112-order
    incident): received, not applied."""
    return InboundMessage.objects.create(
        received_at=timezone.now(),
        peer="10.0.0.5:4000",
        raw=raw.encode("utf-8"),
        size_bytes=len(raw),
        facility=chicago,
        sending_application="EPIC_RAD",
        sending_facility="LAKESHORE",
        control_id=control_id,
        message_type="ORM^O01",
        version="2.3.1",
        dedupe_key=f"EPIC_RAD^LAKESHORE^{control_id}",
        ack_code="AA",
    )


@pytest.mark.parametrize(
    "poison_pid",
    [
        hl7_data.pid(family="QUIN\x00LAN"),  # NUL: PostgreSQL text refuses it
        hl7_data.pid(family="Q" * 300),  # longer than the 100-character column
    ],
    ids=["nul-in-name", "300-char-family-name"],
)
def test_poison_order_is_dead_lettered_and_the_next_five_orders_are_applied(
    hl7_listener, chicago_interfaces, poison_pid, request
):
    chicago = chicago_interfaces
    operations = listen_operations()
    poison_text = hl7_data.orm(accession="POISON1", control_id="POISON-1").replace(hl7_data.pid(), poison_pid)
    assert poison_pid in poison_text
    poison = _stored_poison(chicago, poison_text, "POISON-1")
    # when the hospital goes on sending 5 good orders over one real MLLP connection
    good = [
        hl7_data.orm(accession=f"GOOD{n}", placer=f"P{n}", filler=f"F{n}", control_id=f"GOOD-{n}")
        for n in range(1, 6)
    ]
    acks = exchange(hl7_listener, *good)
    # then all 5 are accepted and applied, in spite of the poison ahead of them in the line
    assert [msa(a) for a in acks] == [("AA", f"GOOD-{n}") for n in range(1, 6)]
    assert set(Order.objects.values_list("accession_number", flat=True)) == {f"GOOD{n}" for n in range(1, 6)}
    # and the poison is set aside at once (a deterministic error), its error and attempt count kept
    poison.refresh_from_db()
    assert poison.status == InboundStatus.DEAD
    assert poison.attempts == 1 and poison.dead_at is not None
    assert "DataError" in poison.error or "ValueError" in poison.error
    assert bytes(poison.raw) == poison_text.encode()  # what was received is kept as received
    # and operations are alerted (after the drain's commit, in the thread that applied it: the
    # poison's row can be read here a moment before its on-commit alert is written)
    alert = wait_for(
        lambda: InterfaceAlert.objects.filter(
            facility=chicago, interface="hl7_in_dead", cleared_at__isnull=True
        ).first()
    )
    assert "1 HL7 message(s) dead-lettered" in alert.reason
    if "inbox-thread" in request.node.callspec.id:
        # (the inline inbox with eager tasks applies in the event loop's own thread, where the
        # channel layer cannot be called synchronously: there the alert row is all, and the desk
        # hears of it from the periodic check)
        assert next_event(operations)["type"] == "interface.inbound_dead_letter"
    # and a later drain does not pick it up again
    assert hl7_inbound_drain(sending_application="EPIC_RAD", sending_facility="LAKESHORE") == 0


def test_transient_failures_are_retried_then_set_aside_without_blocking(
    chicago_interfaces, settings, ops_omar
):
    """An error that is not known to be deterministic stops the drain (order kept, attempt counted);
    after READROOM_HL7_IN_MAX_ATTEMPTS it is set aside and the line moves on."""
    settings.READROOM_HL7_IN_MAX_ATTEMPTS = 3
    chicago = chicago_interfaces
    failing = _stored_poison(chicago, hl7_data.orm(accession="LATER1", control_id="T-1"), "T-1")
    # a real transient error: another session holds the patient table, the apply hits lock_timeout
    from django.db import connection, connections

    other = connections.create_connection("default")
    other.connect()
    other.set_autocommit(False)
    with other.cursor() as cursor:
        cursor.execute("LOCK TABLE imaging_patient IN ACCESS EXCLUSIVE MODE")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '200ms'")
        for attempt in (1, 2):
            assert hl7_inbound_drain(sending_application="EPIC_RAD", sending_facility="LAKESHORE") == 0
            failing.refresh_from_db()
            assert (failing.status, failing.attempts) == (InboundStatus.RECEIVED, attempt)
            assert "lock timeout" in failing.error
        assert hl7_inbound_drain(sending_application="EPIC_RAD", sending_facility="LAKESHORE") == 1
        failing.refresh_from_db()
        assert (failing.status, failing.attempts) == (InboundStatus.DEAD, 3)
    finally:
        other.rollback()
        other.close()
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
    # when operations reprocess it once the cause is gone, it is applied
    from interfaces.hl7.inbound import inbound_message_reprocess

    with pytest.raises(ValueError, match="reason"):
        inbound_message_reprocess(message_id=failing.pk, by=ops_omar, reason="  ")
    assert inbound_message_reprocess(message_id=failing.pk, by=ops_omar, reason="lock released")
    hl7_inbound_drain(sending_application="EPIC_RAD", sending_facility="LAKESHORE")
    failing.refresh_from_db()
    assert failing.status == InboundStatus.PROCESSED and failing.resolution == "lock released"
    assert Order.objects.filter(accession_number="LATER1").exists()
    assert not inbound_message_discard(message_id=failing.pk, by=ops_omar, reason="too late")  # not dead


def test_operations_page_shows_it_red_and_decides_with_a_reason(
    chicago_interfaces, client, ops_omar, admin_chicago
):
    from auditlog.models import LogEntry

    chicago = chicago_interfaces
    poison = _stored_poison(chicago, hl7_data.orm(accession="PX1", control_id="PX-1"), "PX-1")
    InboundMessage.objects.filter(pk=poison.pk).update(
        status=InboundStatus.DEAD, error="DataError: value too long", attempts=1, dead_at=timezone.now()
    )
    # the wrong user is refused
    client.force_login(admin_chicago)
    assert (
        client.post(f"/operations/interfaces/inbound/{poison.pk}/discard/", {"reason": "x"}).status_code
        == 403
    )
    assert client.get("/operations/interfaces/").status_code == 403
    client.force_login(ops_omar)
    page = client.get("/operations/interfaces/").content.decode()
    assert 'data-status="dead"' in page and "DEAD LETTER" in page
    assert "PX-1" in page and "value too long" in page
    assert "QUINLAN" not in page  # metadata only: no patient content from the raw frame
    # no reason: nothing happens
    client.post(f"/operations/interfaces/inbound/{poison.pk}/discard/", {"reason": ""})
    poison.refresh_from_db()
    assert poison.status == InboundStatus.DEAD
    # with a reason: discarded, who and why kept and audited
    response = client.post(
        f"/operations/interfaces/inbound/{poison.pk}/discard/", {"reason": "duplicate of PX-2"}
    )
    assert response.status_code == 302
    poison.refresh_from_db()
    assert (poison.status, poison.resolution, poison.resolved_by) == (
        InboundStatus.DISCARDED,
        "duplicate of PX-2",
        ops_omar,
    )
    entry = LogEntry.objects.get(object_pk=str(poison.pk), content_type__model="inboundmessage")
    assert entry.actor == ops_omar and entry.changes_dict["status"] == ["dead", "discarded"]
    assert 'data-status="dead"' not in client.get("/operations/interfaces/").content.decode()
