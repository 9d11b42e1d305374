"""The operations message browser's services and page (issue 19): find by accession as a whole
field, reprocess a failed inbound message with a reason, refusals; a facility admin is refused."""

from __future__ import annotations

import pytest

from interfaces.hl7.inbound import (
    ReprocessRefused,
    hl7_frame_receive,
    hl7_inbound_drain,
    inbound_message_reprocess,
)
from interfaces.models import InboundMessage, InboundStatus, InterfaceAction
from interfaces.selectors import messages_browse
from tests.hl7_data import CHICAGO_SENDER, orm

pytestmark = pytest.mark.django_db


def _receive(**kwargs) -> InboundMessage:
    receipt = hl7_frame_receive(raw=orm(**kwargs).encode(), peer="10.0.0.5:4000")
    return InboundMessage.objects.get(pk=receipt.message_id)


def test_accession_and_mrn_match_whole_fields_and_the_ack_code_filters(chicago_interfaces):
    first = _receive(accession="ACC-1", mrn="MRN7", control_id="C1")
    _receive(accession="ACC-12", mrn="MRN77", control_id="C2")
    assert list(messages_browse({"accession": "ACC-1"})) == [first]
    assert list(messages_browse({"mrn": "MRN7"})) == [first]
    assert list(messages_browse({"control_id": "C1", "ack": "AA", "facility": chicago_interfaces.code})) == [
        first
    ]
    assert list(messages_browse({"ack": "AR"})) == []


def test_a_failed_message_is_reprocessed_with_a_reason_once_the_cause_is_fixed(chicago_interfaces, ops_omar):
    # given an order that failed to apply (here: marked failed as a conflict would leave it)
    message = _receive(accession="ACC-9", control_id="C9")
    InboundMessage.objects.filter(pk=message.pk).update(status=InboundStatus.FAILED, error="conflict")
    # a reason is required
    with pytest.raises(ReprocessRefused, match="Give a reason"):
        inbound_message_reprocess(message_id=message.pk, by=ops_omar, reason=" ")
    # when ops reprocesses it with one, it is applied and the action recorded
    result = inbound_message_reprocess(message_id=message.pk, by=ops_omar, reason="patient merged by hand")
    assert result.status == InboundStatus.PROCESSED
    assert InterfaceAction.objects.get(inbound=message).reason == "patient merged by hand"
    # and an applied message cannot be applied again
    with pytest.raises(ReprocessRefused, match="applied: nothing to reprocess"):
        inbound_message_reprocess(message_id=message.pk, by=ops_omar, reason="again")
    assert hl7_inbound_drain(sending_application=CHICAGO_SENDER[0], sending_facility=CHICAGO_SENDER[1]) == 0


def test_the_browser_is_for_operations_only(client, ops_omar, admin_chicago, chicago_interfaces):
    message = _receive(accession="ACC-5", control_id="C5")
    client.force_login(ops_omar)
    page = client.get("/operations/interfaces/messages/", {"accession": "ACC-5"})
    assert page.status_code == 200 and b"C5" in page.content
    detail = client.get(f"/operations/interfaces/messages/in/{message.pk}/")
    assert detail.status_code == 200 and b"MSA" in detail.content
    client.force_login(admin_chicago)
    assert client.get("/operations/interfaces/messages/").status_code == 403
    assert client.get(f"/operations/interfaces/messages/in/{message.pk}/").status_code == 403
    assert (
        client.post(f"/operations/interfaces/messages/in/{message.pk}/", {"reason": "x"}).status_code == 403
    )
