"""imaging.Study carries a copy of routing's state for the worklist (routed, SLA deadline, holder): every
way of writing StudyAssignment — the services' compare-and-set UPDATEs, save, bulk writes, delete —
keeps the copy equal to the routing row, in the same transaction."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from imaging.models import Study
from tests.worklist.conftest import make_study
from worklist.assignment import _claim_time_out, study_reassign
from worklist.models import StudyAssignment, worklist_mirror_drift
from worklist.services import study_claim, study_release, study_route

pytestmark = pytest.mark.django_db


def copy_of(study) -> tuple:
    study = Study.objects.get(pk=study.pk)
    return study.worklist_routed, study.worklist_sla_deadline, study.worklist_claimed_by_id


@pytest.fixture
def routed(chicago):
    study = make_study(chicago, code="70450", text="CT HEAD W/O CONTRAST", status="complete")
    study.completed_at = timezone.now()
    study.save()
    study_route(study_id=study.pk)
    return study


def test_routing_copies_the_deadline_onto_the_study(chicago):
    # given an unrouted study: not on any worklist
    study = make_study(chicago, code="70450", text="CT HEAD W/O CONTRAST", status="complete")
    assert copy_of(study) == (False, None, None)
    study.completed_at = timezone.now()
    study.save()
    # when it is routed
    assignment = study_route(study_id=study.pk)
    # then the study says so, with routing's deadline
    assert assignment.sla_deadline is not None
    assert copy_of(study) == (True, assignment.sla_deadline, None)
    assert worklist_mirror_drift() == []


def test_claim_release_and_reassignment_move_the_copied_holder(
    routed, neuro_reader, other_neuro_reader, ops_omar
):
    now = timezone.now()
    deadline = StudyAssignment.objects.get(study=routed).sla_deadline
    # when a reader claims the study, then the copy names them
    study_claim(study_id=routed.pk, user=neuro_reader, at=now)
    assert copy_of(routed) == (True, deadline, neuro_reader.pk)
    # when operations give it to another reader
    study_reassign(study_id=routed.pk, actor=ops_omar, to=other_neuro_reader, reason="cover", at=now)
    assert copy_of(routed) == (True, deadline, other_neuro_reader.pk)
    # when that reader releases it, then nobody holds it in the copy either
    study_release(study_id=routed.pk, user=other_neuro_reader)
    assert copy_of(routed) == (True, deadline, None)
    assert worklist_mirror_drift() == []


def test_a_lost_compare_and_set_copies_nothing(routed, neuro_reader, other_neuro_reader):
    # given the study is held by one reader
    study_claim(study_id=routed.pk, user=neuro_reader, at=timezone.now())
    # when another's compare-and-set claim finds it taken (no row changes)
    changed = StudyAssignment.objects.filter(study=routed, claimed_by__isnull=True).update(
        claimed_by=other_neuro_reader, claimed_at=timezone.now()
    )
    # then the copy still names the holder
    assert changed == 0
    assert copy_of(routed)[2] == neuro_reader.pk


def test_a_timed_out_claim_leaves_the_copy(routed, neuro_reader):
    at = timezone.now()
    study_claim(study_id=routed.pk, user=neuro_reader, at=at)
    assignment = StudyAssignment.objects.get(study=routed)
    # when the sweep releases the idle claim
    released = _claim_time_out(
        assignment.pk,
        routed.pk,
        neuro_reader.pk,
        assignment.last_activity_at,
        at,
        30,
        at + timedelta(hours=1),
    )
    # then the copy is unclaimed too
    assert released and copy_of(routed)[2] is None
    assert worklist_mirror_drift() == []


def test_bulk_writes_and_deletes_are_copied(chicago, routed, neuro_reader):
    # given an unrouted study
    other = make_study(chicago, code="70450", text="CT HEAD W/O CONTRAST")
    deadline = timezone.now() + timedelta(hours=1)
    # when routing rows are written in bulk
    [created] = StudyAssignment.objects.bulk_create([StudyAssignment(study=other, sla_deadline=deadline)])
    assert copy_of(other) == (True, deadline, None)
    created.sla_deadline = deadline + timedelta(hours=1)
    StudyAssignment.objects.bulk_update([created], ["sla_deadline"])
    assert copy_of(other)[1] == deadline + timedelta(hours=1)
    # when a routing row is deleted, then its study leaves the worklists
    StudyAssignment.objects.filter(study=routed).delete()
    assert copy_of(routed) == (False, None, None)
    assert worklist_mirror_drift() == []


def test_a_rolled_back_claim_rolls_back_the_copy(routed, neuro_reader):
    # given a claim inside a transaction that fails afterwards
    with pytest.raises(RuntimeError), transaction.atomic():
        StudyAssignment.objects.filter(study=routed).update(
            claimed_by=neuro_reader, claimed_at=timezone.now()
        )
        assert copy_of(routed)[2] == neuro_reader.pk
        raise RuntimeError("the rest of the claim failed")
    # then neither the routing row nor the copy holds it
    assert StudyAssignment.objects.get(study=routed).claimed_by is None
    assert copy_of(routed)[2] is None


def test_drift_is_detected(routed, neuro_reader):
    # given a copy changed behind routing's back (what no code path may do)
    Study.objects.filter(pk=routed.pk).update(worklist_claimed_by=neuro_reader)
    # then the check names the study
    assert worklist_mirror_drift() == [routed.pk]


def test_saving_a_study_loaded_before_a_claim_keeps_the_holder(routed, neuro_reader):
    # given ingest holds a copy of the study from before the claim
    stale = Study.objects.get(pk=routed.pk)
    study_claim(study_id=routed.pk, user=neuro_reader, at=timezone.now())
    # when it saves its change
    stale.number_of_instances = 42
    stale.save()
    # then its change is stored and the holder is not overwritten
    assert Study.objects.get(pk=routed.pk).number_of_instances == 42
    assert copy_of(routed)[2] == neuro_reader.pk
    assert worklist_mirror_drift() == []
