"""Routing: ingest's ``study_routable`` signal classifies the study from the catalogue, records when it
was routed and why, and writes a *routed* event — once, however often ingest announces it."""

import pytest

from facilities.models import PriorityClass
from imaging.models import Study, StudyStatus
from imaging.signals import study_routable
from tests.conftest import make_radiologist
from tests.worklist.conftest import make_study
from worklist.models import CatalogueRule, StudyAssignment, StudyEvent, StudyEventKind
from worklist.services import study_route

pytestmark = pytest.mark.django_db


def _announce(study: Study) -> Study:
    study_routable.send(sender=Study, study_id=study.pk)
    study.refresh_from_db()
    return study


def test_ct_head_goes_to_neuro(chicago, django_capture_on_commit_callbacks):
    study = make_study(chicago, code="70450", text="CT HEAD WITHOUT CONTRAST", description="CT HEAD WO")
    with django_capture_on_commit_callbacks() as callbacks:
        study = _announce(study)
    assert study.subspecialty.code == "neuro"
    assignment = StudyAssignment.objects.get(study=study)
    assert assignment.routed_at is not None and assignment.claimed_by is None
    assert assignment.because == "procedure code 70450 (default catalogue rule)"
    assert assignment.rvu is not None
    event = StudyEvent.objects.get(study=study)
    assert event.kind == StudyEventKind.ROUTED
    assert event.detail["subspecialty"] == "neuro"
    assert event.detail["changes"]["subspecialty_id"]["from"] is None
    assert len(callbacks) == 1  # study.added to its audience, after commit


def test_xr_chest_without_order_goes_to_chest_by_description(chicago):
    study = _announce(make_study(chicago, description="XR CHEST PA LAT", modalities="DX"))
    assert study.subspecialty.code == "chest"
    assert StudyAssignment.objects.get(study=study).because.startswith(
        "description “XR CHEST PA LAT” matches"
    )
    assert StudyEvent.objects.filter(study=study, kind=StudyEventKind.ROUTED).count() == 1


def test_routing_again_without_change_writes_nothing(chicago):
    study = _announce(make_study(chicago, code="71046"))
    routed_at = StudyAssignment.objects.get(study=study).routed_at
    _announce(study)
    assert StudyAssignment.objects.get(study=study).routed_at == routed_at
    assert StudyEvent.objects.filter(study=study).count() == 1


def test_rerouting_after_a_facility_rule_keeps_first_routed_at(chicago):
    study = _announce(make_study(chicago, code="70450"))
    routed_at = StudyAssignment.objects.get(study=study).routed_at
    CatalogueRule.objects.create(
        facility=chicago, procedure_code="70450", subspecialty_id=_sub_id("general"), note="ER reads heads"
    )
    study = _announce(study)
    assert study.subspecialty.code == "general"
    assert StudyAssignment.objects.get(study=study).routed_at == routed_at
    events = list(StudyEvent.objects.filter(study=study))
    assert [e.detail["rerouted"] for e in events] == [False, True]


def _sub_id(code: str) -> int:
    from credentialing.models import Subspecialty

    return Subspecialty.objects.get(code=code).pk


def test_stroke_protocol_raises_priority_never_lowers(chicago):
    # an emergency CTA head is a stroke work-up; an elective one (aneurysm follow-up) is not
    stat = _announce(make_study(chicago, code="70496", priority=PriorityClass.STAT))
    assert stat.priority == PriorityClass.STROKE
    routine = _announce(make_study(chicago, code="70496", priority=PriorityClass.ROUTINE))
    assert routine.priority == PriorityClass.ROUTINE
    rule = CatalogueRule.objects.create(
        facility=chicago, procedure_code="70450", subspecialty_id=_sub_id("neuro"), trauma_protocol=True
    )
    stroke = _announce(make_study(chicago, code="70450", priority=PriorityClass.STROKE))
    assert stroke.priority == PriorityClass.STROKE  # trauma would be a downgrade
    assert rule.pk == StudyAssignment.objects.get(study=stroke).rule_id


def test_default_priority_applies_only_without_an_order(chicago):
    CatalogueRule.objects.create(
        facility=chicago,
        description_pattern="WRIST",
        subspecialty_id=_sub_id("msk"),
        priority=PriorityClass.ASAP,
    )
    orderless = _announce(make_study(chicago, description="XR WRIST"))
    assert orderless.priority == PriorityClass.ASAP
    ordered = _announce(make_study(chicago, text="XR WRIST", priority=PriorityClass.ROUTINE))
    assert ordered.priority == PriorityClass.ROUTINE


def test_unmatched_study_is_routed_unclassified(chicago):
    study = _announce(make_study(chicago, description="OUTSIDE FILMS"))
    assert study.subspecialty is None
    assignment = StudyAssignment.objects.get(study=study)
    assert assignment.routed_at is not None and "no catalogue rule" in assignment.because


def test_cancelled_study_is_not_routed(chicago):
    study = make_study(chicago, code="70450", status=StudyStatus.CANCELLED)
    assert study_route(study_id=study.pk) is None
    assert not StudyAssignment.objects.filter(study=study).exists()


def test_a_failing_route_does_not_reach_ingest(chicago, monkeypatch, caplog):
    def boom(**kwargs):
        raise RuntimeError("catalogue down")

    monkeypatch.setattr("worklist.services.study_route", boom)
    study_routable.send(sender=Study, study_id=make_study(chicago, code="70450").pk)
    assert "routing study" in caplog.text


def test_routed_study_is_added_to_eligible_screens_only_and_cancelled_leaves_them(
    chicago, dr_msk_wi, django_capture_on_commit_callbacks
):
    from tests.worklist.conftest import Screens, make_eligible
    from worklist.groups import OPERATIONS_GROUP, user_group
    from worklist.services import on_study_cancelled

    # given an eligible neuro reader at Lakeshore and a reader licensed only in WI, both on shift
    neuro = make_radiologist("dr_neuro_three", "neuro")
    make_eligible(neuro, chicago)
    screens = Screens([OPERATIONS_GROUP, user_group(neuro.pk), user_group(dr_msk_wi.pk)])
    study = make_study(chicago, code="70450")
    # when it is routed, then cancelled
    with django_capture_on_commit_callbacks(execute=True):
        _announce(study)
        on_study_cancelled(sender=Study, study_id=study.pk)
    # then
    types = screens.types()
    assert types[OPERATIONS_GROUP] == types[user_group(neuro.pk)] == ["study.added", "study.cancelled"]
    assert types[user_group(dr_msk_wi.pk)] == []
    assert StudyEvent.objects.filter(study=study, kind=StudyEventKind.CANCELLED).count() == 1
