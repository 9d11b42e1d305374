"""Turnaround timestamps: each milestone set once, the first claim kept across a release, the
holder's first look at the images, all exposed in the worklist API; and an order's priority change
re-routes the study so its clock follows."""

from datetime import timedelta

import pytest
from django.utils import timezone

from facilities.models import PriorityClass
from imaging.models import Order, Study, StudyStatus
from imaging.services import order_message_apply
from interfaces.hl7.parse import parse
from tests import hl7_data
from tests.worklist.conftest import Screens, make_study
from worklist.groups import OPERATIONS_GROUP, user_group
from worklist.models import StudyEvent, StudyEventKind, StudyTurnaround
from worklist.services import study_claim, study_release, study_route
from worklist.tat import UnknownMilestone, study_milestone_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def head_ct(chicago):
    now = timezone.now()
    study = make_study(
        chicago,
        code="70450",
        text="CT HEAD W/O CONTRAST",
        description="CT HEAD WO",
        priority=PriorityClass.STAT,
        status=StudyStatus.COMPLETE,
        first_received_at=now - timedelta(minutes=6),
        last_received_at=now - timedelta(minutes=5),
        completed_at=now - timedelta(minutes=5),
    )
    Order.objects.filter(pk=study.order_id).update(ordered_at=now - timedelta(minutes=20))
    study_route(study_id=study.pk, at=now - timedelta(minutes=4))
    return study


def test_a_milestone_is_recorded_once(head_ct):
    # given a final signature at 10:00
    first = timezone.now()
    assert study_milestone_record(study_id=head_ct.pk, milestone="final", at=first) is True
    # when it is recorded again (an addendum, a retried task)
    again = study_milestone_record(study_id=head_ct.pk, milestone="final", at=first + timedelta(minutes=9))
    # then the first time stands
    assert again is False
    assert StudyTurnaround.objects.get(study=head_ct).final_at == first
    with pytest.raises(UnknownMilestone):
        study_milestone_record(study_id=head_ct.pk, milestone="signed", at=first)


def test_the_first_claim_survives_a_release_and_another_claim(head_ct, neuro_reader, other_neuro_reader):
    # given one reader claims, then releases, and another claims later
    first = timezone.now()
    study_claim(study_id=head_ct.pk, user=neuro_reader, at=first)
    study_release(study_id=head_ct.pk, user=neuro_reader)
    study_claim(study_id=head_ct.pk, user=other_neuro_reader, at=first + timedelta(minutes=3))
    # then the claim is the second one, the TAT's first claim the first
    head_ct.assignment.refresh_from_db()
    assert head_ct.assignment.claimed_at == first + timedelta(minutes=3)
    assert StudyTurnaround.objects.get(study=head_ct).first_claimed_at == first


def test_opened_is_the_holders_first_look_at_the_images(
    head_ct, neuro_reader, other_neuro_reader, verified_client, client
):
    # given a study another eligible reader looks at before anyone holds it
    other = verified_client(other_neuro_reader)
    assert other.get(f"/studies/{head_ct.pk}/viewer/").status_code == 200
    assert not StudyTurnaround.objects.filter(study=head_ct, opened_at__isnull=False).exists()
    # when the holder opens it twice
    study_claim(study_id=head_ct.pk, user=neuro_reader, at=timezone.now())
    client.logout()
    holder = verified_client(neuro_reader)
    assert holder.get(f"/studies/{head_ct.pk}/viewer/").status_code == 200
    opened = StudyTurnaround.objects.get(study=head_ct).opened_at
    holder.get(f"/studies/{head_ct.pk}/viewer/")
    # then the first time is kept
    assert opened is not None
    assert StudyTurnaround.objects.get(study=head_ct).opened_at == opened


def test_the_worklist_api_shows_the_turnaround(head_ct, neuro_reader, verified_client):
    # given a claimed, signed study
    claimed = timezone.now()
    study_claim(study_id=head_ct.pk, user=neuro_reader, at=claimed)
    study_milestone_record(study_id=head_ct.pk, milestone="final", at=claimed + timedelta(minutes=7))
    # when its reader lists the worklist
    rows = verified_client(neuro_reader).get("/api/v1/worklist/").json()["results"]
    # then the row carries every milestone and the contract's durations
    [row] = [r for r in rows if r["id"] == head_ct.pk]
    tat = row["tat"]
    assert tat["routed_at"] is not None and tat["ordered_at"] is not None
    assert tat["first_image_at"] is not None and tat["images_complete_at"] is not None
    assert tat["opened_at"] is None and tat["prelim_at"] is None and tat["delivered_at"] is None
    assert tat["minutes"] == {"complete_to_final": 12.0, "order_to_final": 27.0, "final_to_delivered": None}


def test_an_order_priority_change_reroutes_the_study_and_moves_its_deadline(
    chicago, neuro_reader, dr_msk_wi, django_capture_on_commit_callbacks
):
    # given a routine outpatient CT head whose images are complete and routed (24 h clock)
    orm = {"accession": "A5001", "placer": "P5001", "filler": "F5001", "patient_class": "O"}
    order_message_apply(
        facility=chicago, message=parse(hl7_data.orm("NW", priority="R", **orm).encode()).content
    )
    order = Order.objects.get(accession_number="A5001")
    assert order.priority == PriorityClass.ROUTINE
    completed = timezone.now() - timedelta(minutes=10)
    study = Study.objects.create(
        facility=chicago,
        order=order,
        patient=order.patient,
        study_instance_uid="1.2.826.0.1.3680043.10.77.5001",
        accession_number="A5001",
        description="CT HEAD WO",
        modalities="CT",
        priority=PriorityClass.ROUTINE,
        status=StudyStatus.COMPLETE,
        first_received_at=completed,
        last_received_at=completed,
        completed_at=completed,
    )
    study_route(study_id=study.pk)
    assert study.assignment.sla_deadline == completed + timedelta(hours=24)
    screens = Screens([OPERATIONS_GROUP, user_group(neuro_reader.pk), user_group(dr_msk_wi.pk)])
    # when the RIS changes the order to STAT (ORC XO)
    with django_capture_on_commit_callbacks(execute=True):
        order_message_apply(
            facility=chicago,
            message=parse(hl7_data.orm("XO", priority="S", control_id="XO-1", **orm).encode()).content,
        )
    # then the study is re-routed on a 30-minute clock, with an event, and the eligible screens update
    study.assignment.refresh_from_db()
    assert study.assignment.sla_deadline == completed + timedelta(minutes=30)
    reroute = StudyEvent.objects.filter(study=study, kind=StudyEventKind.ROUTED).last()
    assert reroute.detail["rerouted"] is True and reroute.detail["priority"] == PriorityClass.STAT
    received = screens.received()
    for group in (OPERATIONS_GROUP, user_group(neuro_reader.pk)):
        updated = [e for e in received[group] if e["type"] == "study.updated"]
        assert [e["study"]["priority"] for e in updated] == [PriorityClass.STAT], group
    assert received[user_group(dr_msk_wi.pk)] == []
