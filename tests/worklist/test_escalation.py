"""SLA clocks and escalation: 50 % / 80 % warnings and the breach once per study, the code-stroke
ladder (alert at routing, every eligible reader + operations at 2 min, director + notifier at 5 min),
each step a row, told to exactly the screens that should hear it."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import time_machine
from django.db import connection, connections
from django.utils import timezone

from facilities.models import PriorityClass
from imaging.models import Order, StudyStatus
from radiology.schedule import PERIODIC_TASKS
from tests.conftest import make_radiologist
from tests.worklist.conftest import Screens, make_eligible, make_study
from worklist.clock import sla_deadline
from worklist.escalation import escalations_sweep, sla_step_due, stroke_step_fire
from worklist.groups import DIRECTOR_GROUP, OPERATIONS_GROUP, user_group
from worklist.models import (
    DeliveryChannel,
    DeliveryStatus,
    EscalationDelivery,
    EscalationStep,
    StudyEscalation,
    StudyEvent,
    StudyEventKind,
)
from worklist.services import study_claim, study_route

SLA = [EscalationStep.SLA_WARNING_50, EscalationStep.SLA_WARNING_80, EscalationStep.SLA_BREACH]


@pytest.fixture
def clock():
    """Time stands still at a whole second of 'now' until the test moves it."""
    with time_machine.travel(timezone.now().replace(microsecond=0), tick=False) as traveller:
        yield traveller


def _now() -> datetime:
    return timezone.now()


def complete_study(facility, priority: str, completed_at: datetime, **kwargs):
    """A study whose images completed at ``completed_at``, routed: its clock runs from then."""
    study = make_study(
        facility,
        code="70450",
        text="CT HEAD W/O CONTRAST",
        description="CT HEAD WO",
        priority=priority,
        status=StudyStatus.COMPLETE,
        first_received_at=completed_at - timedelta(minutes=2),
        last_received_at=completed_at,
        completed_at=completed_at,
        **kwargs,
    )
    study_route(study_id=study.pk, at=completed_at)
    return study


def stroke_ct(facility, *, ordered_at: datetime):
    """A code-stroke CT head at its first image (routed then), ordered at ``ordered_at``."""
    study = make_study(
        facility,
        code="70450",
        text="CT HEAD W/O CONTRAST CODE STROKE",
        description="CT HEAD WO",
        priority=PriorityClass.STROKE,
        is_stroke=True,
        first_received_at=_now(),
        last_received_at=_now(),
    )
    Order.objects.filter(pk=study.order_id).update(ordered_at=ordered_at)
    return study


def steps(study) -> list[str]:
    return list(
        StudyEscalation.objects.filter(study=study).order_by("at", "id").values_list("step", flat=True)
    )


def escalation_events(received: list[dict]) -> list[str]:
    return [e["escalation"]["step"] for e in received if e["type"] == "study.escalated"]


@pytest.fixture
def er_reader(chicago):
    """A general/ER reader on shift at Lakeshore: eligible for a stroke CT head there."""
    user = make_radiologist("dr_er_il", "general")
    make_eligible(user, chicago)
    return user


@pytest.fixture
def msk_reader_wi(dr_msk_wi, lakeview):
    """dr_msk_wi on shift, but licensed and privileged only in Wisconsin."""
    make_eligible(dr_msk_wi, lakeview)
    return dr_msk_wi


# --- deadlines and step times ---------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("priority", "minutes"),
    [
        (PriorityClass.STROKE, 20),
        (PriorityClass.TRAUMA, 30),
        (PriorityClass.STAT, 30),
        (PriorityClass.ASAP, 240),
        (PriorityClass.ROUTINE, 1440),
    ],
)
def test_deadline_and_warning_times_for_each_priority(chicago, priority, minutes):
    # given a study of each class whose images completed at 02:00 (a stroke's clock runs from its order)
    start = timezone.make_aware(datetime(2026, 11, 28, 2, 0), timezone=chicago.zone)
    study = complete_study(chicago, priority, start)
    if priority == PriorityClass.STROKE:
        Order.objects.filter(pk=study.order_id).update(ordered_at=start)
        study.refresh_from_db()
        study_route(study_id=study.pk)
    # when the clock is read
    assignment = study.assignment
    assignment.refresh_from_db()
    # then the deadline is the contract target after the start, and the steps fall at 50/80/100 %
    window = timedelta(minutes=minutes)
    assert assignment.clock_started_at == start
    assert assignment.sla_deadline == start + window
    due = [sla_step_due(assignment.clock_started_at, assignment.sla_deadline, s) for s in (0.5, 0.8, 1.0)]
    assert due == [start + window / 2, start + window * 4 / 5, start + window]


@pytest.mark.django_db
def test_facility_contract_overrides_the_deadline_and_the_warning_times(chicago, clock):
    # given Lakeshore's contract reads routine studies within 48 hours
    chicago.sla_routine_minutes = 2880
    chicago.save()
    study = complete_study(chicago, PriorityClass.ROUTINE, _now())
    assert study.assignment.sla_deadline == _now() + timedelta(hours=48)
    assert sla_deadline(study) == _now() + timedelta(hours=48)
    # when the sweep runs just before and at 24 h, then at 38.4 h (80 %) and 48 h
    clock.shift(timedelta(hours=24) - timedelta(seconds=1))
    assert escalations_sweep() == []
    clock.shift(timedelta(seconds=1))
    assert [e.step for e in escalations_sweep()] == [EscalationStep.SLA_WARNING_50]
    clock.shift(timedelta(hours=14, minutes=24))
    assert [e.step for e in escalations_sweep()] == [EscalationStep.SLA_WARNING_80]
    clock.shift(timedelta(hours=9, minutes=36))
    assert [e.step for e in escalations_sweep()] == [EscalationStep.SLA_BREACH]
    # then each row keeps when it was due
    due = dict(StudyEscalation.objects.filter(study=study).values_list("step", "due_at"))
    start = study.assignment.clock_started_at
    assert due == {
        EscalationStep.SLA_WARNING_50: start + timedelta(hours=24),
        EscalationStep.SLA_WARNING_80: start + timedelta(hours=38, minutes=24),
        EscalationStep.SLA_BREACH: start + timedelta(hours=48),
    }


# --- SLA warnings and breach --------------------------------------------------------------------------


@pytest.mark.django_db
def test_sla_steps_fire_once_each_and_reach_the_holder_operations_and_eligible_readers(
    chicago, clock, neuro_reader, other_neuro_reader, msk_reader_wi, django_capture_on_commit_callbacks
):
    # given a STAT CT head (30 min) claimed by one neuro reader, and the screens around it
    study = complete_study(chicago, PriorityClass.STAT, _now())
    study_claim(study_id=study.pk, user=neuro_reader, at=_now())
    groups = [
        OPERATIONS_GROUP,
        user_group(neuro_reader.pk),
        user_group(other_neuro_reader.pk),
        user_group(msk_reader_wi.pk),
    ]
    screens = Screens(groups)
    received: dict[str, list[dict]] = {group: [] for group in groups}
    # when the sweep runs twice at each of 15, 24 and 30 minutes
    for minute in (15, 24, 30):
        clock.move_to(study.assignment.clock_started_at + timedelta(minutes=minute))
        with django_capture_on_commit_callbacks(execute=True):
            escalations_sweep()
            escalations_sweep()
        # read the screens before time moves on: the in-memory layer expires messages after 60 s
        for group, events in screens.received().items():
            received[group] += events
    # then each step is one row and one event, in order
    assert steps(study) == SLA
    assert (
        list(
            StudyEvent.objects.filter(study=study, kind=StudyEventKind.ESCALATED).values_list(
                "detail__step", flat=True
            )
        )
        == SLA
    )
    for group in groups[:3]:
        assert escalation_events(received[group]) == SLA, group
    breach = received[OPERATIONS_GROUP][-1]
    assert breach["study"]["id"] == study.pk and breach["study"]["claimed_by"] == neuro_reader.pk
    assert (
        breach["escalation"]["due_at"]
        == (study.assignment.clock_started_at + timedelta(minutes=30)).isoformat()
    )
    # and the reader licensed only in Wisconsin heard nothing at all
    assert received[user_group(msk_reader_wi.pk)] == []
    # and the row says who was told
    row = StudyEscalation.objects.get(study=study, step=EscalationStep.SLA_BREACH)
    assert row.notified["holder"]["id"] == neuro_reader.pk
    assert {r["id"] for r in row.notified["readers"]} == {neuro_reader.pk, other_neuro_reader.pk}


@pytest.mark.django_db
def test_a_sweep_after_downtime_records_every_missed_step_once(chicago, clock):
    # given an unclaimed STAT study and a sweeper that was down past its deadline
    study = complete_study(chicago, PriorityClass.STAT, _now())
    clock.shift(timedelta(minutes=45))
    # when the sweep runs
    fired = escalations_sweep()
    # then all three steps are recorded, each once, and nothing more on the next sweep
    assert sorted(e.step for e in fired) == sorted(SLA)
    assert escalations_sweep() == []
    assert sorted(steps(study)) == sorted(SLA)


@pytest.mark.django_db
def test_cancelled_and_final_studies_do_not_escalate(chicago, clock):
    from worklist.tat import study_milestone_record

    cancelled = complete_study(chicago, PriorityClass.STAT, _now())
    final = complete_study(chicago, PriorityClass.STAT, _now())
    cancelled.status = StudyStatus.CANCELLED
    cancelled.save()
    final.status = StudyStatus.FINAL  # what signing does (reports.services.report_sign)
    final.save()
    study_milestone_record(study_id=final.pk, milestone="final", at=_now() + timedelta(minutes=10))
    clock.shift(timedelta(minutes=31))
    assert escalations_sweep() == []


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_sweeps_record_each_step_exactly_once(chicago):
    if connection.vendor == "sqlite":
        pytest.skip("SQLite serialises writers, so concurrent sweeps there prove nothing; run on PostgreSQL")
    # given twenty breached STAT studies (every step due)
    start = _now() - timedelta(minutes=40)
    studies = [complete_study(chicago, PriorityClass.STAT, start) for _ in range(20)]
    barrier = threading.Barrier(4)
    fired: list[list] = []
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            barrier.wait(timeout=30)
            fired.append(escalations_sweep())
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    # when four workers sweep at the same moment
    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # then every step of every study was recorded by exactly one worker, with one event
    assert errors == []
    assert sum(len(f) for f in fired) == 3 * len(studies)
    for study in studies:
        assert sorted(steps(study)) == sorted(SLA)
        assert StudyEvent.objects.filter(study=study, kind=StudyEventKind.ESCALATED).count() == 3


def test_the_sweep_is_scheduled_for_beat_and_more_often_in_the_embedded_ticker():
    entry = PERIODIC_TASKS["escalations-sweep"]
    assert entry.task == "worklist.tasks.escalations_sweep"
    assert entry.every == timedelta(seconds=15)
    assert entry.embedded_period == timedelta(seconds=5)


# --- code stroke ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_stroke_alert_at_routing_reaches_every_eligible_neuro_and_er_reader(
    chicago, clock, neuro_reader, er_reader, msk_reader_wi, django_capture_on_commit_callbacks
):
    # given the screens of operations, a neuro and an ER reader on shift, and a WI-only reader
    screens = Screens(
        [
            OPERATIONS_GROUP,
            user_group(neuro_reader.pk),
            user_group(er_reader.pk),
            user_group(msk_reader_wi.pk),
        ]
    )
    study = stroke_ct(chicago, ordered_at=_now() - timedelta(minutes=4))
    # when its first image routes it
    with django_capture_on_commit_callbacks(execute=True):
        study_route(study_id=study.pk)
    # then the alert is a row naming who was alerted, and each eligible screen got it
    alert = StudyEscalation.objects.get(study=study)
    assert (alert.step, alert.at, alert.due_at) == (EscalationStep.STROKE_ALERT, _now(), _now())
    assert {r["id"] for r in alert.notified["readers"]} == {neuro_reader.pk, er_reader.pk}
    received = screens.received()
    for group in (OPERATIONS_GROUP, user_group(neuro_reader.pk), user_group(er_reader.pk)):
        assert escalation_events(received[group]) == [EscalationStep.STROKE_ALERT], group
        assert any(e["type"] == "study.added" and e["study"]["is_stroke"] for e in received[group])
    assert received[user_group(msk_reader_wi.pk)] == []
    # and its clock runs from the order: 20 minutes
    assert study.assignment.sla_deadline == _now() - timedelta(minutes=4) + timedelta(minutes=20)
    # and routing it again alerts nobody twice
    with django_capture_on_commit_callbacks(execute=True):
        study_route(study_id=study.pk)
    assert steps(study) == [EscalationStep.STROKE_ALERT]


@pytest.mark.django_db
def test_unclaimed_stroke_at_two_minutes_goes_to_every_eligible_reader_and_operations(
    chicago, clock, neuro_reader, er_reader, msk_reader_wi, django_capture_on_commit_callbacks
):
    # given a routed code stroke nobody claims
    study = stroke_ct(chicago, ordered_at=_now())
    study_route(study_id=study.pk)
    screens = Screens(
        [
            OPERATIONS_GROUP,
            user_group(neuro_reader.pk),
            user_group(er_reader.pk),
            user_group(msk_reader_wi.pk),
        ]
    )
    # when the sweep runs at 1:59 and at 2:00
    clock.shift(timedelta(minutes=1, seconds=59))
    assert escalations_sweep() == []
    clock.shift(timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        fired = escalations_sweep()
    # then the readers step fired once, to operations and both eligible readers, never to WI
    assert [e.step for e in fired] == [EscalationStep.STROKE_READERS]
    row = fired[0]
    assert row.notified["groups"] == [OPERATIONS_GROUP]
    assert {r["id"] for r in row.notified["readers"]} == {neuro_reader.pk, er_reader.pk}
    received = screens.received()
    for group in (OPERATIONS_GROUP, user_group(neuro_reader.pk), user_group(er_reader.pk)):
        assert escalation_events(received[group]) == [EscalationStep.STROKE_READERS], group
    assert received[user_group(msk_reader_wi.pk)] == []
    assert escalations_sweep() == []


@pytest.mark.django_db
def test_a_claim_at_one_minute_fifty_nine_prevents_the_later_stroke_steps(chicago, clock, neuro_reader):
    # given a routed code stroke
    study = stroke_ct(chicago, ordered_at=_now())
    study_route(study_id=study.pk)
    routed = _now()
    # when a neuro reader claims it at 1:59
    clock.shift(timedelta(minutes=1, seconds=59))
    study_claim(study_id=study.pk, user=neuro_reader, at=_now())
    # then neither the 2-min timer, nor the sweeps at 2 and 5 minutes escalate it
    clock.move_to(routed + timedelta(minutes=2))
    assert stroke_step_fire(study_id=study.pk, step=EscalationStep.STROKE_READERS, at=_now()) is None
    assert escalations_sweep() == []
    clock.move_to(routed + timedelta(minutes=5))
    assert escalations_sweep() == []
    assert steps(study) == [EscalationStep.STROKE_ALERT]


@pytest.mark.django_db
def test_the_exact_timer_fires_the_step_on_time_and_the_sweep_then_finds_it_done(chicago, clock):
    from worklist.tasks import stroke_step_fire_task

    study = stroke_ct(chicago, ordered_at=_now())
    study_route(study_id=study.pk)
    # a timer delivered early does nothing; on time it records the step
    clock.shift(timedelta(minutes=1, seconds=30))
    assert stroke_step_fire_task(study.pk, EscalationStep.STROKE_READERS) is False
    clock.shift(timedelta(seconds=30))
    assert stroke_step_fire_task(study.pk, EscalationStep.STROKE_READERS) is True
    assert escalations_sweep() == []
    assert stroke_step_fire_task(study.pk, EscalationStep.STROKE_READERS) is False


@pytest.mark.django_db
def test_facility_stroke_times_are_configurable(chicago, clock):
    chicago.stroke_readers_minutes, chicago.stroke_director_minutes = 1, 3
    chicago.save()
    study = stroke_ct(chicago, ordered_at=_now())
    study_route(study_id=study.pk)
    clock.shift(timedelta(minutes=1))
    assert [e.step for e in escalations_sweep()] == [EscalationStep.STROKE_READERS]
    clock.shift(timedelta(minutes=2))
    assert [e.step for e in escalations_sweep()] == [EscalationStep.STROKE_DIRECTOR]


class _Webhook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, self.headers["Content-Type"], json.loads(body)))
        self.send_response(self.server.answer)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook():
    """A real HTTP server on loopback that records what is POSTed to it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    server.received, server.answer = [], 204
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/stroke"
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def notified_people(director_dana, ops_omar):
    director_dana.email, ops_omar.email = "dana@readroom.example.org", "ops@readroom.example.org"
    director_dana.save()
    ops_omar.save()
    return director_dana, ops_omar


@pytest.mark.django_db
def test_unclaimed_stroke_at_five_minutes_mails_director_and_operations_and_posts_the_webhook(
    chicago, clock, neuro_reader, notified_people, webhook, mailoutbox, django_capture_on_commit_callbacks
):
    # given Lakeshore's pager webhook and a code stroke nobody claims
    director, ops = notified_people
    chicago.escalation_webhook_url = webhook.url
    chicago.save()
    study = stroke_ct(chicago, ordered_at=_now())
    study_route(study_id=study.pk)
    screens = Screens([DIRECTOR_GROUP, OPERATIONS_GROUP, user_group(neuro_reader.pk)])
    # when the sweep runs at 5 minutes
    clock.shift(timedelta(minutes=5))
    with django_capture_on_commit_callbacks(execute=True):
        fired = escalations_sweep()
    # then both later steps are rows (the 2-min one was missed, so it comes first)
    assert [e.step for e in fired] == [EscalationStep.STROKE_READERS, EscalationStep.STROKE_DIRECTOR]
    director_step = fired[1]
    assert [d["id"] for d in director_step.notified["directors"]] == [director.pk]
    assert [o["id"] for o in director_step.notified["operations"]] == [ops.pk]
    # and the director's and operations' screens got the director step
    received = screens.received()
    assert escalation_events(received[DIRECTOR_GROUP]) == [EscalationStep.STROKE_DIRECTOR]
    # (sorted: channels-redis orders a channel's messages by time.time(), which stands still here)
    assert sorted(escalation_events(received[OPERATIONS_GROUP])) == [
        EscalationStep.STROKE_DIRECTOR,
        EscalationStep.STROKE_READERS,
    ]
    # and one e-mail went to each address, without the patient's identity
    assert sorted(m.to[0] for m in mailoutbox) == ["dana@readroom.example.org", "ops@readroom.example.org"]
    assert f"study {study.pk}" in mailoutbox[0].subject and "CODE STROKE" in mailoutbox[0].subject
    assert study.patient.mrn not in mailoutbox[0].body
    # and the webhook got the step as JSON
    [(path, content_type, payload)] = webhook.received
    assert (path, content_type) == ("/hooks/stroke", "application/json")
    assert payload["step"] == EscalationStep.STROKE_DIRECTOR and payload["study"]["id"] == study.pk
    assert study.accession_number not in json.dumps(payload)
    # and every delivery is recorded as sent
    deliveries = EscalationDelivery.objects.filter(escalation=director_step)
    assert sorted((d.channel, d.recipient, d.status) for d in deliveries) == [
        (DeliveryChannel.EMAIL, "dana@readroom.example.org", DeliveryStatus.SENT),
        (DeliveryChannel.EMAIL, "ops@readroom.example.org", DeliveryStatus.SENT),
        (DeliveryChannel.WEBHOOK, webhook.url, DeliveryStatus.SENT),
    ]
    assert all(d.at == _now() and d.error == "" for d in deliveries)


@pytest.mark.django_db
def test_a_failing_webhook_is_recorded_and_the_mail_still_goes(
    chicago, clock, notified_people, webhook, mailoutbox, django_capture_on_commit_callbacks
):
    # given a webhook that answers 500
    webhook.answer = 500
    chicago.escalation_webhook_url = webhook.url
    chicago.save()
    study = stroke_ct(chicago, ordered_at=_now())
    study_route(study_id=study.pk)
    clock.shift(timedelta(minutes=5))
    # when the director step fires
    with django_capture_on_commit_callbacks(execute=True):
        escalations_sweep()
    # then the failure is a row with its reason, nothing was raised, and the e-mails went
    hook = EscalationDelivery.objects.get(channel=DeliveryChannel.WEBHOOK)
    assert (hook.status, hook.error) == (DeliveryStatus.FAILED, "HTTP 500 Internal Server Error")
    assert len(mailoutbox) == 2
    assert (
        EscalationDelivery.objects.filter(channel=DeliveryChannel.EMAIL, status=DeliveryStatus.SENT).count()
        == 2
    )
