"""Assignment: push routing (core team > same patient > lowest load, caps that stroke and trauma
bypass), the timeout of abandoned claims, and reassignment by operations."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from credentialing.models import FacilityPrivilege
from facilities.models import RoutingMode
from imaging.models import Study
from radiology.schedule import PERIODIC_TASKS
from tests.worklist.conftest import Screens, make_study
from worklist.assignment import (
    PushCandidate,
    _claim_time_out,
    claims_timeout_sweep,
    push_pick,
    study_activity_touch,
)
from worklist.groups import OPERATIONS_GROUP, user_group
from worklist.models import StudyAssignment, StudyEvent, StudyEventKind
from worklist.services import study_claim, study_route

pytestmark = pytest.mark.django_db


def candidate(user_id, *, core=False, same_patient=0, load="0", cap="20") -> PushCandidate:
    return PushCandidate(user_id, f"Dr {user_id}", core, same_patient, Decimal(load), Decimal(cap))


# --- the pick (pure) --------------------------------------------------------------------------------


def test_core_team_beats_same_patient_beats_lowest_load():
    busy_core = candidate(1, core=True, load="12")
    same_patient = candidate(2, same_patient=1, load="8")
    idle = candidate(3, load="0")
    assert push_pick([idle, same_patient, busy_core], bypass_cap=False).user_id == 1
    assert push_pick([idle, same_patient], bypass_cap=False).user_id == 2
    assert push_pick([candidate(4, load="3.5"), idle], bypass_cap=False).user_id == 3


def test_the_pick_says_why():
    pick = push_pick([candidate(1, core=True, load="2"), candidate(2)], bypass_cap=False)
    assert pick.because == "pushed to Dr 1: facility core team; RVU load 2 of cap 20"
    pick = push_pick([candidate(1, load="2"), candidate(2, load="1")], bypass_cap=False)
    assert pick.because == "pushed to Dr 2: lowest RVU load 1 of cap 20"


def test_a_reader_at_their_cap_is_skipped_unless_stroke_or_trauma():
    at_cap_core = candidate(1, core=True, load="20", cap="20")
    over = candidate(2, load="30", cap="25")
    assert push_pick([at_cap_core, candidate(3, load="19")], bypass_cap=False).user_id == 3
    nobody = push_pick([at_cap_core, over], bypass_cap=False)
    assert nobody.user_id is None
    assert nobody.because == "every eligible reader on shift is at their RVU cap (Dr 1 20/20, Dr 2 30/25)"
    stroke = push_pick([at_cap_core, over], bypass_cap=True)
    assert stroke.user_id == 1 and "load caps bypassed" in stroke.because


def test_nobody_eligible():
    assert push_pick([], bypass_cap=True).because == "no eligible reader on shift"


# --- push on routing ------------------------------------------------------------------------------------


@pytest.fixture
def push_chicago(chicago):
    chicago.routing_mode = RoutingMode.PUSH
    chicago.save()
    return chicago


def events(study, kind):
    return list(StudyEvent.objects.filter(study=study, kind=kind))


def test_a_pull_facility_pushes_nothing(neuro_reader, chicago):
    study = make_study(chicago, code="70450")
    study_route(study_id=study.pk)
    assert StudyAssignment.objects.get(study=study).claimed_by is None
    assert not StudyEvent.objects.filter(kind__in=[StudyEventKind.ASSIGNED, StudyEventKind.NOT_ASSIGNED])


def test_push_gives_the_study_to_the_core_team_and_tells_the_screens(
    push_chicago, neuro_reader, other_neuro_reader, django_capture_on_commit_callbacks
):
    # given two eligible neuro readers on shift, the second on Lakeshore's core team
    FacilityPrivilege.objects.filter(profile__user=other_neuro_reader).update(core_team=True)
    screens = Screens([OPERATIONS_GROUP, user_group(other_neuro_reader.pk), user_group(neuro_reader.pk)])
    # when a head CT arrives and is routed
    study = make_study(push_chicago, code="70450")
    with django_capture_on_commit_callbacks(execute=True):
        study_route(study_id=study.pk)
    # then the core-team reader holds it, with an "assigned" event saying why
    assignment = StudyAssignment.objects.get(study=study)
    assert assignment.claimed_by == other_neuro_reader
    assert assignment.last_activity_at == assignment.claimed_at
    [event] = events(study, StudyEventKind.ASSIGNED)
    assert event.detail["to"] == other_neuro_reader.pk
    assert event.detail["because"].startswith("pushed to Dr dr_neuro_two: facility core team")
    # and every screen hears it added, then claimed by the core-team reader
    received = screens.received()
    # (the pick's own notice — worklist.notices, tests/worklist/test_notices.py — aside)
    received = {g: [e for e in events if e["type"] != "notice"] for g, events in received.items()}
    for group in (OPERATIONS_GROUP, user_group(other_neuro_reader.pk)):
        assert [(e["type"], e["study"]["claimed_by"]) for e in received[group]] == [
            ("study.added", other_neuro_reader.pk),  # sent after commit: the payload is committed state
            ("study.claimed", other_neuro_reader.pk),
        ]


def test_push_keeps_a_patient_with_the_reader_who_has_their_other_study(
    push_chicago, neuro_reader, other_neuro_reader
):
    # given dr_neuro_il holds this patient's CT head (so carries more load than the other reader)
    first = make_study(push_chicago, code="70450")
    study_route(study_id=first.pk)
    StudyAssignment.objects.filter(study=first).update(claimed_by=None, claimed_at=None)
    study_claim(study_id=first.pk, user=neuro_reader, at=timezone.now())
    # when the same patient's CTA head arrives
    second = Study.objects.create(
        facility=push_chicago,
        patient=first.patient,
        study_instance_uid="1.2.3.4.5.999",
        accession_number="ACC-CTA",
        description="CTA HEAD",
        modalities="CT",
    )
    study_route(study_id=second.pk)
    # then it goes to the same reader despite the higher load
    assert StudyAssignment.objects.get(study=second).claimed_by == neuro_reader
    assert (
        "other open study(ies) of this patient"
        in events(second, StudyEventKind.ASSIGNED)[0].detail["because"]
    )


def test_push_picks_the_lowest_load(push_chicago, neuro_reader, other_neuro_reader):
    # given dr_neuro_il already holds a study worth some RVUs
    busy = make_study(push_chicago, code="70450")
    study_route(study_id=busy.pk)
    StudyAssignment.objects.filter(study=busy).update(claimed_by=neuro_reader, rvu=Decimal("2.5"))
    # when another patient's head CT arrives
    study = make_study(push_chicago, code="70450")
    study_route(study_id=study.pk)
    # then the idle reader gets it
    assert StudyAssignment.objects.get(study=study).claimed_by == other_neuro_reader


def test_a_stroke_bypasses_the_cap_a_routine_study_does_not(push_chicago, neuro_reader):
    # given the only eligible reader is at their cap (0 RVUs: no pushed work at all)
    profile = neuro_reader.radiologist_profile
    profile.rvu_load_cap = Decimal("0")
    profile.save()
    routine = make_study(push_chicago, code="70450")
    stroke = make_study(push_chicago, code="70450", text="CT HEAD CODE STROKE", priority="STROKE")
    # when both are routed
    study_route(study_id=routine.pk)
    study_route(study_id=stroke.pk)
    # then the routine study stays on the pull worklist with the reason; the stroke goes to the reader
    assert StudyAssignment.objects.get(study=routine).claimed_by is None
    [refusal] = events(routine, StudyEventKind.NOT_ASSIGNED)
    assert refusal.detail["because"].startswith("every eligible reader on shift is at their RVU cap")
    assert StudyAssignment.objects.get(study=stroke).claimed_by == neuro_reader
    assert "load caps bypassed" in events(stroke, StudyEventKind.ASSIGNED)[0].detail["because"]


def test_nobody_on_shift_leaves_it_on_the_worklist_with_the_reason(push_chicago, dr_neuro_il):
    study = make_study(push_chicago, code="70450")
    study_route(study_id=study.pk)
    assert StudyAssignment.objects.get(study=study).claimed_by is None
    assert events(study, StudyEventKind.NOT_ASSIGNED)[0].detail == {"because": "no eligible reader on shift"}


def test_push_happens_once_a_reroute_does_not_push_again(push_chicago, neuro_reader):
    study = make_study(push_chicago, code="70450")
    study_route(study_id=study.pk)
    StudyAssignment.objects.filter(study=study).update(claimed_by=None, claimed_at=None)
    study.description = "changed"
    study.save()
    study_route(study_id=study.pk)
    assert StudyAssignment.objects.get(study=study).claimed_by is None
    assert len(events(study, StudyEventKind.ASSIGNED)) == 1


# --- claim timeout --------------------------------------------------------------------------------------


@pytest.fixture
def two_claims(chicago, neuro_reader):
    t0 = timezone.now() - timedelta(hours=1)
    idle, busy = make_study(chicago, code="70450"), make_study(chicago, code="70450")
    for study in (idle, busy):
        study_route(study_id=study.pk)
        study_claim(study_id=study.pk, user=neuro_reader, at=t0)
    return t0, idle, busy


def test_an_idle_claim_times_out_an_active_one_does_not(
    neuro_reader, two_claims, django_capture_on_commit_callbacks
):
    # given two claims at t0; the reader opened one of them again 20 minutes later
    t0, idle, busy = two_claims
    assert study_activity_touch(study_id=busy.pk, user=neuro_reader, at=t0 + timedelta(minutes=20))
    screens = Screens([user_group(neuro_reader.pk), OPERATIONS_GROUP])
    # when the sweep runs 31 minutes after the claims (facility timeout 30)
    with django_capture_on_commit_callbacks(execute=True):
        released = claims_timeout_sweep(at=t0 + timedelta(minutes=31))
    # then only the idle one went back to the worklist, with a timed_out event
    assert released == [idle.pk]
    assert StudyAssignment.objects.get(study=idle).claimed_by is None
    assert StudyAssignment.objects.get(study=busy).claimed_by == neuro_reader
    [event] = events(idle, StudyEventKind.TIMED_OUT)
    assert event.detail["from"] == neuro_reader.pk and event.detail["timeout_minutes"] == 30
    # and the former holder's screen and operations hear it released
    received = screens.received()
    for group in (user_group(neuro_reader.pk), OPERATIONS_GROUP):
        assert [(e["type"], e["study"]["id"], e.get("timed_out")) for e in received[group]] == [
            ("study.released", idle.pk, True)
        ]


def test_at_a_push_facility_a_timed_out_study_goes_to_the_next_best_reader(
    push_chicago, neuro_reader, other_neuro_reader
):
    # given a head CT pushed to one of two eligible neuro readers, who then leaves it untouched
    t0 = timezone.now() - timedelta(hours=1)
    study = make_study(push_chicago, code="70450")
    study_route(study_id=study.pk, at=t0)
    first = StudyAssignment.objects.get(study=study).claimed_by
    other = other_neuro_reader if first == neuro_reader else neuro_reader
    # when the claim times out (facility timeout 30 minutes)
    released = claims_timeout_sweep(at=t0 + timedelta(minutes=31))
    # then the study is pushed to the other reader, not back to the one who let it sit
    assert released == [study.pk]
    assignment = StudyAssignment.objects.get(study=study)
    assert assignment.claimed_by == other
    assert assignment.claimed_at == t0 + timedelta(minutes=31)
    first_push, second_push = events(study, StudyEventKind.ASSIGNED)
    assert first_push.detail["to"] == first.pk and second_push.detail["to"] == other.pk
    # and when that reader lets it sit too, it does not go back to the first: it stays on the pull
    # worklist (every eligible reader sees it), with the reason
    claims_timeout_sweep(at=t0 + timedelta(minutes=62))
    assert StudyAssignment.objects.get(study=study).claimed_by is None
    [refusal] = events(study, StudyEventKind.NOT_ASSIGNED)
    assert refusal.detail == {"because": "every eligible reader on shift has let it time out"}


def test_at_a_pull_facility_a_timed_out_study_waits_on_the_worklist(chicago, two_claims):
    t0, idle, _ = two_claims
    claims_timeout_sweep(at=t0 + timedelta(minutes=31))
    assert StudyAssignment.objects.get(study=idle).claimed_by is None
    assert not events(idle, StudyEventKind.ASSIGNED)


def test_the_timeout_is_the_facility_s(chicago, two_claims):
    t0, idle, _ = two_claims
    chicago.claim_timeout_minutes = 90
    chicago.save()
    assert claims_timeout_sweep(at=t0 + timedelta(minutes=61)) == []
    assert StudyAssignment.objects.get(study=idle).claimed_by is not None


def test_fresh_activity_wins_the_race_with_the_sweep(neuro_reader, two_claims):
    # given the sweep has read an idle claim …
    t0, idle, _ = two_claims
    seen = StudyAssignment.objects.get(study=idle)
    # … and the reader opens the study before the sweep writes
    study_activity_touch(study_id=idle.pk, user=neuro_reader, at=t0 + timedelta(minutes=31))
    # when the sweep's compare-and-set runs on what it read
    seen_at, now = seen.last_activity_at, t0 + timedelta(minutes=31)
    released = _claim_time_out(seen.pk, idle.pk, neuro_reader.pk, seen_at, seen_at, 30, now)
    # then nothing changes
    assert not released
    assert StudyAssignment.objects.get(study=idle).claimed_by == neuro_reader
    assert not events(idle, StudyEventKind.TIMED_OUT)


def test_only_the_holder_s_activity_counts(other_neuro_reader, two_claims):
    _, idle, _ = two_claims
    assert not study_activity_touch(study_id=idle.pk, user=other_neuro_reader, at=timezone.now())


def test_opening_the_viewer_is_activity(verified_client, neuro_reader, two_claims):
    t0, idle, _ = two_claims
    client = verified_client(neuro_reader)
    assert client.get(f"/studies/{idle.pk}/viewer/").status_code == 200
    assert StudyAssignment.objects.get(study=idle).last_activity_at > t0 + timedelta(minutes=30)


def test_the_sweep_is_periodic():
    assert PERIODIC_TASKS["claims-timeout-sweep"].task == "worklist.coverage_tasks.claims_timeout_sweep"
