"""The backstop of routing (worklist.services.studies_unrouted_route, beat ``studies-unrouted-route``):
a study's announcement is an on-commit callback, so a process killed between ingest's commit and the
callback, or a routing that raised, left it on no worklist and alerted nobody. The sweep routes it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from imaging.models import PriorState, Study, StudyStatus
from imaging.services import studies_complete_quiet
from radiology.schedule import PERIODIC_TASKS
from tests.worklist.conftest import make_study
from worklist.models import EscalationStep, StudyAssignment, StudyEscalation
from worklist.services import UNROUTED_GRACE_SECONDS, studies_unrouted_route

pytestmark = pytest.mark.django_db


def _received(study: Study, at) -> Study:
    Study.objects.filter(pk=study.pk).update(first_received_at=at, last_received_at=at)
    study.refresh_from_db()
    return study


def test_a_complete_study_whose_announcement_was_lost_is_routed_by_the_sweep(
    chicago, django_capture_on_commit_callbacks
):
    # given a head CT whose last image came 5 minutes ago, completed by the quiet sweep, and the
    # process killed before the commit's callbacks ran (they are captured and never run)
    now = timezone.now()
    study = _received(
        make_study(chicago, code="70450", text="CT HEAD W/O CONTRAST"), now - timedelta(minutes=5)
    )
    with django_capture_on_commit_callbacks(execute=False) as lost:
        assert studies_complete_quiet(now=now) == [study.pk]
    assert lost, "the quiet sweep announces on commit"
    study.refresh_from_db()
    assert study.status == StudyStatus.COMPLETE and not study.worklist_routed
    # when the backstop runs within the grace after the announcement, then it leaves it (the normal
    # path may still be under way)
    quiet = timedelta(seconds=chicago.study_quiet_seconds)
    soon = study.completed_at + quiet + timedelta(seconds=UNROUTED_GRACE_SECONDS - 5)
    assert studies_unrouted_route(at=soon) == []
    # and once the grace has passed it routes it: on the worklist, the clock from the images' time
    later = study.completed_at + quiet + timedelta(seconds=UNROUTED_GRACE_SECONDS + 5)
    assert studies_unrouted_route(at=later) == [study.pk]
    study.refresh_from_db()
    assignment = StudyAssignment.objects.get(study=study)
    assert study.worklist_routed and study.subspecialty.code == "neuro"
    assert assignment.clock_started_at <= study.completed_at < later
    # and a second sweep finds nothing
    assert studies_unrouted_route(at=later + timedelta(seconds=30)) == []


def test_a_code_stroke_whose_routing_was_lost_is_routed_and_alerts(
    chicago, django_capture_on_commit_callbacks
):
    # given a code stroke receiving its images for a minute, never routed (its announcement lost)
    now = timezone.now()
    stroke = _received(
        make_study(chicago, code="70450", text="CT HEAD W/O CONTRAST", priority="STROKE", is_stroke=True),
        now - timedelta(minutes=1),
    )
    # and beside it what the sweep must leave: a head CT still receiving (not routable yet), a
    # retrieved prior (closed: never on a worklist) and a stroke whose first image came just now
    receiving = _received(make_study(chicago, code="70450"), now - timedelta(minutes=1))
    prior = make_study(chicago, status=StudyStatus.FINAL, prior_state=PriorState.RETRIEVED)
    _received(prior, now - timedelta(hours=1))
    fresh = _received(make_study(chicago, code="70450", priority="STROKE", is_stroke=True), now)
    # when the backstop runs
    with django_capture_on_commit_callbacks(execute=True):
        assert studies_unrouted_route(at=now) == [stroke.pk]
    # then the stroke is on the worklist and its alert fired; the others are as they were
    stroke.refresh_from_db()
    assert stroke.worklist_routed and stroke.status == StudyStatus.RECEIVING
    assert StudyEscalation.objects.filter(study=stroke, step=EscalationStep.STROKE_ALERT).exists()
    assert not StudyAssignment.objects.filter(study_id__in=[receiving.pk, prior.pk, fresh.pk]).exists()


def test_the_backstop_is_on_the_schedule():
    entry = PERIODIC_TASKS["studies-unrouted-route"]
    assert entry.task == "worklist.tasks.studies_unrouted_route"
    assert entry.every <= timedelta(seconds=UNROUTED_GRACE_SECONDS)


def test_one_failing_announcement_never_skips_the_other_studies_of_its_commit(
    chicago, django_capture_on_commit_callbacks
):
    from imaging.signals import study_routable

    # given two head CTs completed by one sweep (one transaction, two announcements), and a receiver
    # of the announcement that fails for the first of them
    now = timezone.now()
    first, second = (
        _received(make_study(chicago, code="70450", text="CT HEAD W/O CONTRAST"), now - timedelta(minutes=5))
        for _ in range(2)
    )

    def failing(sender, study_id: int, **kwargs) -> None:
        if study_id == first.pk:
            raise RuntimeError("a receiver that fails")

    study_routable.connect(failing, dispatch_uid="test.failing")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert studies_complete_quiet(now=now) == [first.pk, second.pk]
    finally:
        study_routable.disconnect(dispatch_uid="test.failing")
    # then the second study was routed all the same (and the first, before its failing receiver)
    assert set(Study.objects.filter(worklist_routed=True).values_list("pk", flat=True)) == {
        first.pk,
        second.pk,
    }
