"""A signature and its ORU commit together; the EMR (a real MLLP server) receives F, then C with the
addendum; its ACK of the final read is the study's "delivered" milestone."""

from __future__ import annotations

import hl7
import pytest
from django.utils import timezone
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from interfaces.hl7.outbound import outbox_deliver
from interfaces.models import OutboundMessage
from reports.services import SigningRefused, addendum_sign, report_draft_save, report_sign, report_start
from tests.conftest import PASSWORD
from tests.interfaces.fake_emr import FakeEmr
from tests.reports.conftest import FILLED
from worklist.models import StudyTurnaround

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def emr(chicago):
    server = FakeEmr(lambda control_id, seen: "AA").start()
    chicago.hl7_outbound_host, chicago.hl7_outbound_port = "127.0.0.1", server.port
    chicago.save()
    yield server
    server.stop()


def _sign(report, user, **extra):
    return report_sign(
        report_id=report.pk, user=user, secret=PASSWORD, at=timezone.now(), final=True, **extra
    )


def test_final_read_reaches_the_emr_then_the_addendum_as_a_correction(
    emr, chicago, claimed_head_ct, neuro_reader
):
    # given a filled report of the claimed head CT
    report = report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now())
    report_draft_save(report_id=report.pk, user=neuro_reader, values=FILLED, at=timezone.now())
    # when it is signed final and the outbox runs
    _sign(report, neuro_reader)
    outbox_deliver(facility_id=chicago.pk)  # (Celery may already have, on commit)
    assert OutboundMessage.objects.get(source=f"report:{report.pk}:final").status == "acked"
    # then the EMR holds an ORU with OBR-25 F, the accession echoed and the impression text
    assert len(emr.messages) == 1
    oru = hl7.parse(emr.messages[0])
    assert str(oru.segment("OBR")[25]) == "F"
    assert str(oru.segment("OBR")[18]) == claimed_head_ct.accession_number
    assert "No acute intracranial abnormality." in emr.messages[0]
    turnaround = StudyTurnaround.objects.get(study=claimed_head_ct)
    assert turnaround.final_at is not None and turnaround.delivered_at >= turnaround.final_at
    # and an addendum goes out as C, carrying the report and the addendum
    addendum_sign(
        report_id=report.pk,
        user=neuro_reader,
        text="Small left SDH on review.",
        secret=PASSWORD,
        at=timezone.now(),
    )
    outbox_deliver(facility_id=chicago.pk)
    assert len(emr.messages) == 2
    correction = hl7.parse(emr.messages[1])
    assert str(correction.segment("OBR")[25]) == "C"
    assert "Small left SDH on review." in emr.messages[1] and "No mass effect." in emr.messages[1]


def test_a_facility_that_asks_gets_the_addenda_as_nte_after_the_obx_rows(
    emr, chicago, claimed_head_ct, neuro_reader
):
    # given a facility whose EMR shows result comments apart, and a signed, delivered final read
    chicago.oru_addenda_as_nte = True
    chicago.save(update_fields=["oru_addenda_as_nte"])
    report = report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now())
    report_draft_save(report_id=report.pk, user=neuro_reader, values=FILLED, at=timezone.now())
    _sign(report, neuro_reader)
    outbox_deliver(facility_id=chicago.pk)
    # when two addenda are signed and the outbox delivers over MLLP
    for text in ("Small left SDH on review.", "Discussed with Dr Kildare | 02:10.\nPatient to CT angio."):
        addendum_sign(report_id=report.pk, user=neuro_reader, text=text, secret=PASSWORD, at=timezone.now())
    outbox_deliver(facility_id=chicago.pk)
    # then the EMR got F, then C with addendum 1, then C with both, all acknowledged
    assert len(emr.messages) == 3
    assert not OutboundMessage.objects.exclude(status="acked").exists()
    last = emr.messages[2]
    strict = parse_message(last, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    assert strict.validate()
    order = strict.oru_r01_patient_result.oru_r01_order_observation
    assert order.obr.obr_25.value == "C"
    observations = order.oru_r01_observation
    # the report's text stays in OBX rows, with no addendum section among them
    assert "55107-7" not in {o.obx.obx_3.obx_3_1.value for o in observations}
    assert "No mass effect." in {o.obx.obx_5.value for o in observations}
    # and every addendum line is an NTE of the last observation, headed with its number and signer
    notes = [hl7.parse(last).unescape(n.nte_3.to_er7()) for n in observations[-1].nte]
    signer = neuro_reader.get_full_name() or neuro_reader.username  # the cast has no first/last name
    assert [n.split(" (")[0] for n in notes if n.startswith("ADDENDUM")] == ["ADDENDUM 1", "ADDENDUM 2"]
    assert notes[0].startswith(f"ADDENDUM 1 ({signer}, ")
    assert [n for n in notes if not n.startswith("ADDENDUM")] == [
        "Small left SDH on review.",
        "Discussed with Dr Kildare | 02:10.",
        "Patient to CT angio.",
    ]
    assert {str(n.nte_2.value) for n in observations[-1].nte} == {"L"}
    # and the first correction carried the first addendum only
    assert hl7.parse(emr.messages[1]).segments("NTE")[-1][3][0] == "Small left SDH on review."


def test_by_default_an_addendum_is_an_obx_section_and_no_nte(emr, chicago, claimed_head_ct, neuro_reader):
    report = report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now())
    report_draft_save(report_id=report.pk, user=neuro_reader, values=FILLED, at=timezone.now())
    _sign(report, neuro_reader)
    addendum_sign(
        report_id=report.pk, user=neuro_reader, text="Small left SDH.", secret=PASSWORD, at=timezone.now()
    )
    outbox_deliver(facility_id=chicago.pk)
    correction = hl7.parse(emr.messages[-1])
    assert "\rNTE|" not in emr.messages[-1]
    rows = [(str(o[3][0][0]), correction.unescape(str(o[5]))) for o in correction.segments("OBX")]
    assert rows[-2:] == [("55107-7", "ADDENDUM 1:"), ("55107-7", "Small left SDH.")]


def test_a_refused_signature_queues_nothing(emr, claimed_head_ct, neuro_reader):
    report = report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now())
    with pytest.raises(SigningRefused):  # required fields empty
        _sign(report, neuro_reader)
    assert not OutboundMessage.objects.exists()


def test_the_oru_names_the_ordering_provider_as_the_hospital_sent_them(
    emr, chicago, claimed_head_ct, neuro_reader
):
    # given the head CT's order came with its ordering provider's XCN (as ingest keeps it)
    order = claimed_head_ct.order
    order.ordering_provider_id = "1234567"
    order.ordering_provider_xcn = {
        "id": "1234567",
        "family": "WELBY",
        "given": "MARCUS",
        "middle": "J",
        "prefix": "DR",
        "degree": "MD",
        "authority": "NPI",
    }
    order.save()
    report = report_start(study_id=claimed_head_ct.pk, user=neuro_reader, at=timezone.now())
    report_draft_save(report_id=report.pk, user=neuro_reader, values=FILLED, at=timezone.now())
    # when the read is signed and delivered
    _sign(report, neuro_reader)
    outbox_deliver(facility_id=chicago.pk)
    # then ORC-12 and OBR-16 echo the provider component by component, as the EMR knows them
    oru = hl7.parse(emr.messages[0])
    for segment, field in (("ORC", 12), ("OBR", 16)):
        assert str(oru.segment(segment)[field]) == "1234567^WELBY^MARCUS^J^^DR^MD^^NPI"
