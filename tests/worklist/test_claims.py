"""Claims are exclusive: eligibility first, then a compare-and-set; every change is an event and is
told to operations and the claimant's screens after commit."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from imaging.models import StudyStatus
from tests.conftest import make_radiologist
from tests.worklist.conftest import Screens, make_eligible, make_study
from worklist.groups import OPERATIONS_GROUP, user_group
from worklist.models import StudyAssignment, StudyEvent, StudyEventKind
from worklist.services import (
    ClaimTaken,
    NotClaimable,
    NotEligible,
    study_claim,
    study_release,
    study_route,
)


@pytest.fixture
def head_ct(chicago):
    study = make_study(chicago, code="70450", description="CT HEAD WO")
    study_route(study_id=study.pk)
    return study


@pytest.mark.django_db
def test_claim_then_release(neuro_reader, head_ct):
    now = timezone.now()
    claim = study_claim(study_id=head_ct.pk, user=neuro_reader, at=now)
    assert claim.claimed_by == neuro_reader and claim.claimed_at == now
    assignment = StudyAssignment.objects.get(study=head_ct)
    assert (assignment.claimed_by, assignment.claimed_at) == (neuro_reader, now)
    # claiming again is harmless and writes nothing
    assert (
        study_claim(study_id=head_ct.pk, user=neuro_reader, at=now + timedelta(minutes=1)).claimed_at == now
    )
    study_release(study_id=head_ct.pk, user=neuro_reader)
    assert StudyAssignment.objects.get(study=head_ct).claimed_by is None
    kinds = list(StudyEvent.objects.filter(study=head_ct).values_list("kind", "actor_id"))
    assert kinds == [
        (StudyEventKind.ROUTED, None),
        (StudyEventKind.CLAIMED, neuro_reader.pk),
        (StudyEventKind.RELEASED, neuro_reader.pk),
    ]


@pytest.mark.django_db
def test_claim_and_release_reach_operations_and_every_eligible_screen_after_commit(
    neuro_reader, other_neuro_reader, dr_msk_wi, head_ct, django_capture_on_commit_callbacks
):
    # given the screens of operations, two eligible neuro readers and a reader licensed only in WI
    screens = Screens(
        [
            OPERATIONS_GROUP,
            user_group(neuro_reader.pk),
            user_group(other_neuro_reader.pk),
            user_group(dr_msk_wi.pk),
        ]
    )
    # when one neuro reader claims, then releases
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        study_claim(study_id=head_ct.pk, user=neuro_reader, at=timezone.now())
    assert screens.types()[OPERATIONS_GROUP] == []  # nothing before the commit
    for callback in callbacks:
        callback()
    with django_capture_on_commit_callbacks(execute=True):
        study_release(study_id=head_ct.pk, user=neuro_reader)
    # then operations and both eligible readers hear both changes; the WI reader hears nothing
    received = screens.received()
    for group in (OPERATIONS_GROUP, user_group(neuro_reader.pk), user_group(other_neuro_reader.pk)):
        assert [(e["type"], e["study"]["id"], e["study"]["claimed_by"]) for e in received[group]] == [
            ("study.claimed", head_ct.pk, neuro_reader.pk),
            ("study.released", head_ct.pk, None),
        ]
    assert received[user_group(dr_msk_wi.pk)] == []
    # events carry workflow metadata, never the patient's identity
    event = received[OPERATIONS_GROUP][0]["study"]
    assert event["facility"] == head_ct.facility.code and event["priority"] == head_ct.priority
    assert "patient" not in event and head_ct.patient.mrn not in str(event)


@pytest.mark.django_db
def test_second_reader_finds_it_taken(neuro_reader, other_neuro_reader, head_ct):
    study_claim(study_id=head_ct.pk, user=neuro_reader, at=timezone.now())
    with pytest.raises(ClaimTaken) as taken:
        study_claim(study_id=head_ct.pk, user=other_neuro_reader, at=timezone.now())
    assert taken.value.holder == neuro_reader
    with pytest.raises(ClaimTaken):
        study_release(study_id=head_ct.pk, user=other_neuro_reader)
    assert StudyAssignment.objects.get(study=head_ct).claimed_by == neuro_reader
    assert StudyEvent.objects.filter(study=head_ct, kind=StudyEventKind.CLAIMED).count() == 1


@pytest.mark.django_db
def test_ineligible_reader_is_refused_with_reasons(dr_neuro_il, neuro_il_credentials, head_ct):
    # licence and privileges, but no shift
    with pytest.raises(NotEligible) as refusal:
        study_claim(study_id=head_ct.pk, user=dr_neuro_il, at=timezone.now())
    assert any(m.startswith("not on shift") for m in refusal.value.assessment.messages)
    assert not StudyEvent.objects.filter(kind=StudyEventKind.CLAIMED).exists()


@pytest.mark.django_db
def test_unrouted_study_may_be_claimed(neuro_reader, chicago, sub_neuro):
    study = make_study(chicago, code="70450", subspecialty=sub_neuro)
    study_claim(study_id=study.pk, user=neuro_reader, at=timezone.now())
    assert StudyAssignment.objects.get(study=study).claimed_by == neuro_reader


@pytest.mark.django_db
def test_cancelled_study_cannot_be_claimed(neuro_reader, chicago):
    study = make_study(chicago, code="70450", status=StudyStatus.CANCELLED)
    with pytest.raises(NotClaimable):
        study_claim(study_id=study.pk, user=neuro_reader, at=timezone.now())


@pytest.fixture
def sub_neuro(db):
    from credentialing.models import Subspecialty

    return Subspecialty.objects.get(code="neuro")


# --- the race ---------------------------------------------------------------------------------

READERS = 50


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_claims_have_exactly_one_winner(chicago):
    if connection.vendor == "sqlite":
        pytest.skip("SQLite serialises writers, so concurrent claims there prove nothing; run on PostgreSQL")
    study = make_study(chicago, code="70450", description="CT HEAD WO")
    study_route(study_id=study.pk)
    readers = []
    for i in range(READERS):
        reader = make_radiologist(f"dr_race_{i:02d}", "neuro")
        make_eligible(reader, chicago)
        readers.append(reader)
    at = timezone.now()
    barrier = threading.Barrier(READERS)
    outcomes: list[str] = []
    lock = threading.Lock()

    def claim(reader) -> None:
        try:
            barrier.wait(timeout=60)  # every thread holds its own connection and goes at once
            try:
                study_claim(study_id=study.pk, user=reader, at=at)
                outcome = "won"
            except ClaimTaken:
                outcome = "taken"
            except Exception as error:  # any other outcome fails the assertions below
                outcome = repr(error)
            with lock:
                outcomes.append(outcome)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claim, args=(r,)) for r in readers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(set(outcomes)) == ["taken", "won"], outcomes
    assert outcomes.count("won") == 1 and outcomes.count("taken") == READERS - 1
    assignment = StudyAssignment.objects.get(study=study)
    claimed = StudyEvent.objects.filter(study=study, kind=StudyEventKind.CLAIMED)
    assert claimed.count() == 1
    assert claimed.get().actor_id == assignment.claimed_by_id
