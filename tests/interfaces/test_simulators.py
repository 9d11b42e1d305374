"""The demo's two simulators over real sockets: the EMR simulator acknowledges what the outbox sends,
and the facility simulator writes the hospital's local wall clock into its orders and images."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest
from django.utils import timezone

from imaging.models import Order, Study
from interfaces.emr_simulator import emr_simulator_running
from interfaces.hl7.ack import ack_parse
from interfaces.hl7.client import Endpoint, MllpConnection
from interfaces.hl7.oru import oru_build
from interfaces.hl7.outbound import outbound_message_enqueue, outbox_deliver
from interfaces.models import OutboundMessage, OutboundStatus
from interfaces.selectors import simulated_facilities
from interfaces.simulator import exam_random, exam_simulate, order_message
from tests.interfaces.conftest import applied
from tests.interfaces.oru_data import stroke_report
from tests.net import free_port


@pytest.fixture
def emr_simulator():
    """(host, port) of a running EMR simulator on its own event loop thread."""
    port = free_port()
    with emr_simulator_running(port) as serving:
        assert serving
        yield "127.0.0.1", port


def test_a_second_emr_simulator_on_a_taken_port_serves_nothing(emr_simulator):
    # given one EMR simulator already on the port (run_embedded --simulate, while load_demo runs)
    host, port = emr_simulator
    # when load_demo's own one tries the same port, it stands aside, and the first still answers
    with emr_simulator_running(port) as serving:
        assert serving is False
        with MllpConnection(Endpoint(host, port, ack_timeout=5)) as conn:
            assert ack_parse(conn.exchange(oru_build(stroke_report()).encode())).code == "AA"


def test_emr_simulator_acknowledges_each_oru_on_one_connection(emr_simulator):
    # given two reports for Lakeshore's EMR
    host, port = emr_simulator
    first, second = stroke_report(), stroke_report(control_id="RR0000000000000002")
    # when both go over one persistent connection
    with MllpConnection(Endpoint(host, port, ack_timeout=5)) as conn:
        acks = [ack_parse(conn.exchange(oru_build(r).encode())) for r in (first, second)]
        raw = conn.exchange(oru_build(first).encode()).decode()
    # then each is AA for its own MSH-10, answered as the receiver the report was addressed to
    assert [(a.code, a.control_id) for a in acks] == [
        ("AA", "RR0000000000000001"),
        ("AA", "RR0000000000000002"),
    ]
    assert raw.split("\r")[0].split("|")[2:6] == ["EPIC_RAD", "LAKESHORE", "READROOM", "READROOM"]


def test_emr_simulator_rejects_what_is_not_a_result(emr_simulator):
    # given an order and some garbage sent to the EMR
    host, port = emr_simulator
    exam = exam_random(random.Random(3), "CHI-L1")
    with MllpConnection(Endpoint(host, port, ack_timeout=5)) as conn:
        # when each is sent on the same connection
        order_ack = ack_parse(conn.exchange(order_message(exam, ("EPIC_RAD", "LAKESHORE"), "ORD1")))
        garbage = conn.exchange(b"hello, EMR")
        after = ack_parse(conn.exchange(oru_build(stroke_report()).encode()))
    # then both are refused with the reason and the connection still serves the next report
    assert (order_ack.code, order_ack.control_id) == ("AR", "ORD1")
    assert "200" in order_ack.text and "not a result message" in order_ack.text
    assert b"MSA|AR" in garbage and b"MSH" in garbage
    assert after.code == "AA"


@pytest.mark.django_db(transaction=True)
def test_the_outbox_delivers_to_the_emr_simulator(emr_simulator, chicago):
    # given Lakeshore's ORU endpoint is the EMR simulator and a report is queued
    host, port = emr_simulator
    chicago.hl7_outbound_host, chicago.hl7_outbound_port = host, port
    chicago.save()
    report = stroke_report()
    message = outbound_message_enqueue(
        facility=chicago, payload=oru_build(report), control_id=report.control_id, source="test"
    )
    # when the outbox delivers (eager Celery may already have, after commit)
    outbox_deliver(facility_id=chicago.pk)
    # then the message is acknowledged AA
    message = OutboundMessage.objects.get(pk=message.pk)
    assert (message.status, message.ack_code) == (OutboundStatus.ACKED, "AA")


def test_simulated_exams_carry_the_facility_local_time(hl7_listener, dicom_scp, chicago):
    # given Lakeshore (America/Chicago) as the simulator sees it, on a server whose clock is UTC
    (facility,) = simulated_facilities(code=chicago.code)
    assert facility.timezone == "America/Chicago"
    exam = exam_random(random.Random(7), chicago.code, stroke_rate=0.0)
    # when an order and its images are sent through the real ports
    ack, statuses = asyncio.run(
        exam_simulate(
            exam,
            facility,
            host="127.0.0.1",
            hl7_port=hl7_listener[1],
            dicom_port=dicom_scp[1],
            slices=2,
            control_id="SIMTZ1",
        )
    )
    # then the order time and the study time are now, not hours off
    assert b"MSA|AA" in ack and statuses == [0, 0]
    applied()  # the order is applied after the ACK
    now = timezone.now()
    order = Order.objects.get(accession_number=exam.accession)
    study = Study.objects.get(study_instance_uid=exam.study_uid)
    assert abs(order.ordered_at - now) < timedelta(minutes=2)
    assert abs(study.study_datetime - now) < timedelta(minutes=2)


def test_the_simulated_mix_is_a_hospitals_mostly_routine_few_strokes():
    rng = random.Random(19)
    exams = [exam_random(rng, "CHI-L1") for _ in range(4000)]
    strokes = sum(e.is_stroke for e in exams) / len(exams)
    trauma = sum(e.reason.startswith("TRAUMA") for e in exams) / len(exams)
    routine = sum(e.priority in "AR" for e in exams) / len(exams)
    assert 0.02 < strokes < 0.04
    assert 0.05 < trauma < 0.11
    assert routine > 0.6


class _AlwaysFirst(random.Random):
    """A draw that always comes first: the AI reads the exam and finds what it looks for."""

    def random(self) -> float:
        return 0.0


def test_the_simulators_ai_node_sends_an_sr_that_raises_a_ct_head(hl7_listener, dicom_scp, chicago):
    import dataclasses

    from imaging.models import AiResult
    from interfaces.simulator import PROCEDURES
    from radiology.demo_reading import demo_ai_rules_load

    # given the demo's AI rules at Lakeshore, and a routine CT head from its simulator
    demo_ai_rules_load([chicago])
    (facility,) = simulated_facilities(code=chicago.code)
    exam = exam_random(random.Random(7), chicago.code, stroke_rate=0.0, trauma_rate=0.0)
    exam = dataclasses.replace(exam, procedure=PROCEDURES[0], priority="R", reason="Headache.")
    assert exam.procedure.code == "70450"
    # when the exam is sent, and its AI node reads it
    ack, statuses = asyncio.run(
        exam_simulate(
            exam, facility, host="127.0.0.1", hl7_port=hl7_listener[1], dicom_port=dicom_scp[1],
            slices=3, control_id="SIMAI1", ai_rng=_AlwaysFirst(),
        )
    )  # fmt: skip
    # then the SR is stored after the images (status 0) and is an AI result at the study
    assert b"MSA|AA" in ack and statuses == [0, 0, 0, 0]
    applied()
    study = Study.objects.get(study_instance_uid=exam.study_uid)
    result = AiResult.objects.get(study=study)
    assert (result.manufacturer, result.model, result.version) == ("Aidoc", "BriefCase ICH", "2.1")
    # and the study shows the badge and is raised to STAT
    study.refresh_from_db()
    assert study.ai_badge.startswith("Cerebral hemorrhage p=0.70")
    assert study.priority == "STAT"
