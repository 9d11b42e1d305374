"""The report outbox against a fake EMR (a real MLLP server): strictly in order per facility, each
message acknowledged once, retries with exponential backoff, dead letter with an operations alarm,
requeue. The clock is driven with time-machine instead of sleeping through the backoff."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from interfaces.health import interface_alerts_check, interface_health
from interfaces.hl7.outbound import (
    oru_enqueue,
    oru_receiver,
    outbound_message_enqueue,
    outbound_message_requeue,
    outbox_deliver,
    outbox_facilities_due,
    outbox_heads_probe,
    retry_delay,
)
from interfaces.models import InterfaceAlert, OutboundMessage, OutboundStatus
from interfaces.tasks import outbox_sweep
from tests.interfaces.fake_emr import FakeEmr, always
from tests.interfaces.oru_data import stroke_report
from tests.interfaces.test_worker_recovery import start_worker
from tests.net import wait_until

T0 = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
def clock():
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def emr_at(facility, emr: FakeEmr):
    facility.hl7_outbound_host, facility.hl7_outbound_port = "127.0.0.1", emr.port
    facility.save(update_fields=["hl7_outbound_host", "hl7_outbound_port"])
    return facility


def report_queue(facility, n: int) -> OutboundMessage:
    """The n-th signed report of the test, queued for ``facility``."""
    order = dataclasses.replace(stroke_report().order, accession_number=f"ACC-{n}")
    report = stroke_report(control_id=f"RRTEST{n:04d}", order=order)
    return oru_enqueue(facility=facility, report=report, source=f"report:{n}:v1")


def state(control_id: str) -> OutboundMessage:
    return OutboundMessage.objects.get(control_id=control_id)


@pytest.fixture
def emr():
    servers: list[FakeEmr] = []

    def make(answer, **kwargs) -> FakeEmr:
        servers.append(FakeEmr(answer, **kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


@pytest.mark.django_db
def test_emr_down_then_ae_once_then_up_delivers_each_report_once_in_order(chicago, emr, clock):
    # given an EMR that is down, and answers AE to the first message it ever sees, AA after that
    fake = emr(lambda control_id, seen: "AE" if control_id == "RRTEST0001" and seen == 0 else "AA")
    emr_at(chicago, fake)
    # and three signed reports queued in signing order
    for n in (1, 2, 3):
        report_queue(chicago, n)

    # when delivery runs while the EMR is down: connection refused, retry in 5 s, then 10 s
    assert outbox_deliver(facility_id=chicago.pk) == 0
    head = state("RRTEST0001")
    assert (head.attempts, head.next_attempt_at) == (1, T0 + timedelta(seconds=5))
    assert "refused" in head.last_error.lower()
    clock.shift(timedelta(seconds=4))
    assert outbox_deliver(facility_id=chicago.pk) == 0  # not due yet: not attempted
    assert state("RRTEST0001").attempts == 1
    clock.shift(timedelta(seconds=1))
    assert outbox_deliver(facility_id=chicago.pk) == 0
    assert state("RRTEST0001").next_attempt_at == T0 + timedelta(seconds=15)
    # a later report never overtakes the head
    assert [state(f"RRTEST000{n}").attempts for n in (2, 3)] == [0, 0]

    # when the EMR comes up and rejects the head once with AE
    fake.start()
    clock.shift(timedelta(seconds=10))
    assert outbox_deliver(facility_id=chicago.pk) == 0
    head = state("RRTEST0001")
    assert (head.attempts, head.ack_code, head.status) == (3, "AE", OutboundStatus.QUEUED)
    assert head.next_attempt_at == T0 + timedelta(seconds=35)  # 5 · 2² after the third attempt
    assert fake.received == ["RRTEST0001"]

    # then the next attempt is accepted and the rest follow on the same connection, in order
    clock.shift(timedelta(seconds=20))
    assert outbox_deliver(facility_id=chicago.pk) == 3
    assert fake.received == ["RRTEST0001", "RRTEST0001", "RRTEST0002", "RRTEST0003"]
    # each message's ACK is stored with the attempts it took
    for control_id, attempts in (("RRTEST0001", 4), ("RRTEST0002", 1), ("RRTEST0003", 1)):
        message = state(control_id)
        assert (message.status, message.attempts, message.ack_code) == (OutboundStatus.ACKED, attempts, "AA")
        assert f"MSA|AA|{control_id}" in message.ack_raw
        assert message.acked_at == T0 + timedelta(seconds=35) and message.last_error == ""
    # and nothing is sent twice afterwards
    clock.shift(timedelta(minutes=10))
    assert outbox_deliver(facility_id=chicago.pk) == 0
    assert len(fake.received) == 4
    # the EMR got exactly what the outbox stored
    assert fake.messages[-1] == state("RRTEST0003").payload


@pytest.mark.django_db(transaction=True)
def test_always_rejected_becomes_a_dead_letter_with_an_alarm_and_can_be_requeued(
    chicago, emr, clock, settings, ops_omar, client
):
    from tests.interfaces.test_health import listen_operations, next_event

    settings.READROOM_HL7_OUT_MAX_ATTEMPTS = 3
    # given an EMR that rejects the first report every time (AR) and accepts the second
    rejecting = {"RRTEST0001"}
    fake = emr(lambda control_id, seen: "AR" if control_id in rejecting else "AA").start()
    emr_at(chicago, fake)
    operations = listen_operations()
    # when the first is tried as its transaction commits (tasks run inline here) …
    report_queue(chicago, 1)
    report_queue(chicago, 2)
    assert state("RRTEST0001").attempts == 1
    # … and again 5 s and 10 s later
    for wait in (5, 10):
        clock.shift(timedelta(seconds=wait))
        outbox_deliver(facility_id=chicago.pk)

    # then the first is dead, the line moved on and the second was delivered
    dead = state("RRTEST0001")
    assert (dead.status, dead.attempts, dead.ack_code) == (OutboundStatus.DEAD, 3, "AR")
    assert dead.dead_at == T0 + timedelta(seconds=15)
    assert state("RRTEST0002").status == OutboundStatus.ACKED
    assert fake.received == ["RRTEST0001"] * 3 + ["RRTEST0002"]
    # and operations were alarmed: an open HL7-out alert and events on the operations socket
    alert = InterfaceAlert.objects.get(facility=chicago, interface="hl7_out", cleared_at__isnull=True)
    assert "RRTEST0001" in alert.reason
    assert next_event(operations)["interface"] == "hl7_out"  # interface.undelivered
    # and each operations user has a notice that stays until acknowledged, with the message's link
    from worklist.models import NoticeKind, UserNotice

    notice = UserNotice.objects.get(user=ops_omar, kind=NoticeKind.RESULT_DEAD_LETTERED)
    assert notice.text.startswith(f"{chicago.name}: ORU^R01 RRTEST0001: ")
    assert notice.url == f"/operations/interfaces/messages/out/{dead.pk}/"
    (entry,) = interface_health()
    assert (entry.hl7_out.dead, entry.hl7_out.status(timezone.now())) == (1, "dead")
    # the operations page shows it with a requeue button
    client.force_login(ops_omar)
    page = client.get("/operations/interfaces/").content.decode()
    assert "RRTEST0001" in page and "DEAD LETTER" in page and "Requeue" in page

    # when the EMR is fixed and operations requeue it from the page
    rejecting.clear()
    response = client.post(f"/operations/interfaces/outbound/{dead.pk}/requeue/")
    assert response.status_code == 302
    # then it was delivered again at once (the requeue schedules delivery after commit)
    requeued = state("RRTEST0001")
    assert (requeued.status, requeued.attempts, requeued.ack_code) == (OutboundStatus.ACKED, 1, "AA")
    assert requeued.requeued_by == ops_omar
    assert fake.received[-1] == "RRTEST0001"
    # and the next health check clears the alert
    interface_alerts_check()
    assert not InterfaceAlert.objects.filter(interface="hl7_out", cleared_at__isnull=True).exists()
    # a second requeue of a delivered message does nothing
    assert outbound_message_requeue(message_id=dead.pk, by=ops_omar) is False


@pytest.mark.django_db
def test_only_operations_may_requeue(chicago, client, admin_chicago, mso_mary, clock):
    message = report_queue(chicago, 1)
    OutboundMessage.objects.filter(pk=message.pk).update(status=OutboundStatus.DEAD)
    for outsider in (admin_chicago, mso_mary):
        client.force_login(outsider)
        assert client.post(f"/operations/interfaces/outbound/{message.pk}/requeue/").status_code == 403
    client.logout()
    assert client.post(f"/operations/interfaces/outbound/{message.pk}/requeue/").status_code == 302  # sign in
    assert state("RRTEST0001").status == OutboundStatus.DEAD


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (None, "no ACK within"),  # says nothing
        (b"\x0bHELLO WORLD\x1c\r", "unreadable ACK"),  # a frame, but not HL7
        (b"\x0bMSH|^~\\&|EPIC|LAKESHORE\rMSA|ZZ|RRTEST0001\x1c\r", "not an acknowledgement code"),
        (b"\x0bMSH|^~\\&|EPIC|LAKESHORE\rMSA|AA|SOMEONE-ELSE\x1c\r", "ACK is for 'SOMEONE-ELSE'"),
        (b"garbage without a frame end", "no ACK within"),
    ],
)
def test_garbage_or_no_ack_is_a_failure_and_is_retried(chicago, emr, clock, settings, reply, error):
    settings.READROOM_HL7_OUT_ACK_TIMEOUT = 0.3
    # given an EMR that answers with something that is not an acceptance of our message
    fake = emr(lambda control_id, seen: reply).start()
    emr_at(chicago, fake)
    report_queue(chicago, 1)
    report_queue(chicago, 2)
    # when delivery runs
    assert outbox_deliver(facility_id=chicago.pk) == 0
    # then the head was sent once, failed with the reason, waits for its retry and blocks the line
    head = state("RRTEST0001")
    assert (head.status, head.attempts, head.acked_at) == (OutboundStatus.QUEUED, 1, None)
    assert error in head.last_error
    assert head.next_attempt_at == T0 + timedelta(seconds=5)
    assert fake.received == ["RRTEST0001"]


def _attempted_until_it_waits_a_minute(chicago, clock) -> OutboundMessage:
    """Attempt the head each time it is due until it waits a minute or more."""
    while (head := state("RRTEST0001")).next_attempt_at - timezone.now() < timedelta(seconds=60):
        clock.move_to(head.next_attempt_at)
        outbox_deliver(facility_id=chicago.pk)
    return state("RRTEST0001")


@pytest.mark.django_db
def test_an_emr_back_from_an_outage_gets_the_queue_at_the_next_sweep_not_after_its_backoff(
    chicago, emr, clock
):
    # given an EMR that is down while three reports are signed, so the head backs off past a minute
    fake = emr(always("AA"))
    emr_at(chicago, fake)
    for n in (1, 2, 3):
        report_queue(chicago, n)
    head = _attempted_until_it_waits_a_minute(chicago, clock)
    assert head.last_error.startswith("connect to ") and head.ack_code == ""
    waits_until = head.next_attempt_at
    # when the sweep runs while the EMR is still down: the probe fails, nothing is sent or changed
    assert outbox_heads_probe() == []
    assert outbox_sweep() == 0
    assert state("RRTEST0001").next_attempt_at == waits_until and fake.received == []
    # when the EMR comes back, the next sweep (10 s later) finds it and sends the whole queue, in order
    fake.start()
    clock.shift(timedelta(seconds=10))
    assert timezone.now() < waits_until - timedelta(seconds=30)
    assert outbox_sweep() == 1
    assert fake.received == ["RRTEST0001", "RRTEST0002", "RRTEST0003"]
    assert [state(f"RRTEST000{n}").status for n in (1, 2, 3)] == [OutboundStatus.ACKED] * 3


@pytest.mark.django_db
def test_a_head_the_emr_refused_keeps_its_backoff_though_the_emr_is_reachable(chicago, emr, clock):
    # given an EMR that is up but answers AE, so the head backs off past a minute
    fake = emr(always("AE")).start()
    emr_at(chicago, fake)
    report_queue(chicago, 1)
    head = _attempted_until_it_waits_a_minute(chicago, clock)
    sent = len(fake.received)
    # then the probe does not shorten that back-off (resending at every sweep would flood the EMR)
    clock.shift(timedelta(seconds=10))
    assert outbox_heads_probe() == []
    assert outbox_sweep() == 0
    assert (state("RRTEST0001").next_attempt_at, len(fake.received)) == (head.next_attempt_at, sent)


@pytest.mark.django_db
def test_a_facility_without_an_oru_endpoint_retries_and_says_why(chicago, clock):
    report_queue(chicago, 1)
    assert outbox_deliver(facility_id=chicago.pk) == 0
    assert "no ORU host/port configured" in state("RRTEST0001").last_error


def test_backoff_doubles_from_5_seconds_up_to_5_minutes(settings):
    assert [retry_delay(n).total_seconds() for n in range(1, 10)] == [5, 10, 20, 40, 80, 160, 300, 300, 300]
    settings.READROOM_HL7_OUT_RETRY_JITTER = True
    spread = {retry_delay(3).total_seconds() for _ in range(50)}
    assert len(spread) > 1 and all(16 <= s <= 24 for s in spread)


@pytest.mark.django_db
def test_too_old_is_dead_even_with_attempts_left(chicago, clock, settings):
    settings.READROOM_HL7_OUT_MAX_AGE_HOURS = 1
    report_queue(chicago, 1)
    clock.shift(timedelta(hours=1))
    outbox_deliver(facility_id=chicago.pk)
    assert (state("RRTEST0001").status, state("RRTEST0001").attempts) == (OutboundStatus.DEAD, 1)


@pytest.mark.django_db
def test_sequence_per_facility_and_the_sweep_wakes_only_due_heads(chicago, lakeview, clock):
    # given reports for two facilities
    first, second = report_queue(chicago, 1), report_queue(chicago, 2)
    other = report_queue(lakeview, 3)
    assert (first.sequence, second.sequence, other.sequence) == (1, 2, 1)
    assert set(outbox_facilities_due()) == {chicago.pk, lakeview.pk}
    # when Chicago's head fails (no endpoint) and waits 5 s, its due second message does not wake it
    outbox_deliver(facility_id=chicago.pk)
    assert state("RRTEST0002").next_attempt_at <= timezone.now()
    assert outbox_facilities_due() == [lakeview.pk]
    clock.shift(timedelta(seconds=5))
    assert set(outbox_facilities_due()) == {chicago.pk, lakeview.pk}


@pytest.mark.django_db
def test_unacknowledged_for_5_minutes_turns_red_and_alarms(chicago, emr, clock):
    # given a report queued to an EMR that is down
    fake = emr(always("AA"))
    emr_at(chicago, fake)
    report_queue(chicago, 1)
    outbox_deliver(facility_id=chicago.pk)
    (entry,) = interface_health()
    assert entry.hl7_out.status(timezone.now()) == "sending" and entry.hl7_out.queued == 1
    assert interface_alerts_check() == []
    # when 5 minutes pass without an ACK
    clock.shift(timedelta(minutes=5, seconds=1))
    (entry,) = interface_health()
    # then it is overdue, alarms once, and the page shows it red
    assert entry.hl7_out.status(timezone.now()) == "overdue"
    (alert,) = interface_alerts_check()
    assert alert.interface == "hl7_out" and "not acknowledged" in alert.reason
    assert interface_alerts_check() == []
    # when the EMR comes back and the report is acknowledged, the alarm clears
    fake.start()
    assert outbox_deliver(facility_id=chicago.pk) == 1
    interface_alerts_check()
    assert not InterfaceAlert.objects.filter(cleared_at__isnull=True).exists()
    (entry,) = interface_health()
    assert entry.hl7_out.status(timezone.now()) == "ok" and entry.hl7_out.last_ack_at == timezone.now()


@pytest.mark.django_db
def test_operations_page_shows_hl7_out_red_when_overdue(chicago, client, ops_omar, clock):
    report_queue(chicago, 1)
    clock.shift(timedelta(minutes=6))
    client.force_login(ops_omar)
    page = client.get("/operations/interfaces/").content.decode()
    assert 'data-testid="hl7-out"' in page and 'data-status="overdue"' in page
    assert "NOT ACKNOWLEDGED" in page


@pytest.mark.django_db
def test_enqueue_inside_a_transaction_delivers_after_commit(chicago, emr, django_capture_on_commit_callbacks):
    # given a reachable EMR
    fake = emr(always("AA")).start()
    emr_at(chicago, fake)
    app, fac = oru_receiver(chicago)
    # when a report is queued in the caller's transaction (tasks run inline in tests)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        report_queue(chicago, 1)
    # then nothing was sent before commit; after it, the message is delivered
    assert fake.received == [] and len(callbacks) == 1
    callbacks[0]()
    assert fake.received == ["RRTEST0001"] and state("RRTEST0001").status == OutboundStatus.ACKED
    assert (app, fac) == ("CHI-L1", "CHI-L1")  # no HL7 sender registered: the facility code


@pytest.mark.django_db
def test_control_id_is_unique_per_facility(chicago, clock):
    from django.db import IntegrityError

    report_queue(chicago, 1)
    with pytest.raises(IntegrityError):
        outbound_message_enqueue(facility=chicago, payload="MSH|", control_id="RRTEST0001", source="x")


@pytest.mark.django_db(transaction=True)
def test_deliverers_racing_on_one_facility_send_each_message_once_in_order(chicago, emr, clock):
    # given an EMR that takes its time over each ACK (so the workers overlap)
    def slow_accept(control_id: str, seen: int) -> str:
        time.sleep(0.05)
        return "AA"

    fake = emr(slow_accept)
    emr_at(chicago, fake)
    # and 15 reports queued while it was down (each commit's inline delivery found it refusing)
    for n in range(1, 16):
        report_queue(chicago, n)
    assert state("RRTEST0001").attempts == 1
    fake.start()
    clock.shift(timedelta(seconds=5))
    # when four workers deliver the same facility at the same time, each with its own connection
    from django.db import connection

    def worker() -> None:
        try:
            outbox_deliver(facility_id=chicago.pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # then the EMR received every message exactly once, in sequence
    assert fake.received == [f"RRTEST{n:04d}" for n in range(1, 16)]
    assert OutboundMessage.objects.filter(status=OutboundStatus.ACKED).count() == 15


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    not django_settings.REDIS_URL or connection.vendor != "postgresql",
    reason="needs a real broker and a database another process can reach (CI: PostgreSQL + Redis)",
)
def test_two_real_celery_workers_deliver_in_order(chicago, emr, worker_queue):
    # given two worker processes on the real broker and an EMR that is slow to answer
    def slow_accept(control_id: str, seen: int) -> str:
        time.sleep(0.02)
        return "AA"

    fake = emr(slow_accept).start()
    emr_at(chicago, fake)
    workers = [start_worker(worker_queue), start_worker(worker_queue)]
    try:
        # when 20 reports are signed one after another, each enqueueing a delivery task on commit
        for n in range(1, 21):
            report_queue(chicago, n)
        wait_until(lambda: OutboundMessage.objects.filter(status=OutboundStatus.ACKED).count() == 20)
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
    # then the EMR received each exactly once, in signing order
    assert fake.received == [f"RRTEST{n:04d}" for n in range(1, 21)]
