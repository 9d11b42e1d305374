"""Undoing a match by hand (issue #13, docs/orders.md): operations take a wrong order away from a
study, with a reason, until a report on it is signed. The study goes back to what its images alone
said (patient, accession, priority), its claim is released, a draft keeps the reader's words, and it
is routed again and waits for its order once more — on the page and over REST."""

from __future__ import annotations

from datetime import timedelta

import pytest
from auditlog.models import LogEntry
from django.utils import timezone

from facilities.models import PriorityClass
from imaging.models import OrderMatch, Study, StudyStatus
from reports.models import Report, ReportStatus, ReportTemplate, TemplateVersion
from reports.services import report_start
from tests.reports.conftest import CT_HEAD
from tests.worklist.conftest import make_study, order_open
from worklist.escalation import stroke_step_fire
from worklist.models import (
    EscalationStep,
    NoticeKind,
    StudyAssignment,
    StudyEscalation,
    StudyEvent,
    StudyEventKind,
    UserNotice,
)
from worklist.order_match import study_order_match

pytestmark = pytest.mark.django_db

WRONG = "wrong patient: the order was for the next CT"


def _unmatch_api(client, study_id: int, **body):
    return client.post(f"/api/v1/worklist/{study_id}/order-unmatch/", body, content_type="application/json")


@pytest.fixture
def head_template(chicago) -> TemplateVersion:
    template = ReportTemplate.objects.create(facility=chicago, name="CT head", procedure_codes=["70450"])
    return TemplateVersion.objects.create(template=template, number=1, content=CT_HEAD)


@pytest.fixture
def mismatched(chicago, ops_omar, waiting, django_capture_on_commit_callbacks):
    """``waiting`` matched by mistake to another patient's STAT order (its history in the order)."""
    wrong = order_open(chicago, "A9002", mrn="MRN1234", priority=PriorityClass.STAT)
    wrong.reason = "Fall on warfarin."
    wrong.save()
    with django_capture_on_commit_callbacks(execute=True):
        study_order_match(
            study_id=waiting.pk, order_id=wrong.pk, actor=ops_omar, reason="looked like it", at=timezone.now()
        )
    study = Study.objects.get(pk=waiting.pk)
    assert (study.order_id, study.priority, study.accession_number) == (wrong.pk, PriorityClass.STAT, "A9002")
    return study


def test_operations_undo_a_wrong_match_and_the_study_goes_back_to_what_its_images_said(
    client, ops_omar, chicago, waiting, mismatched, django_capture_on_commit_callbacks
):
    wrong = mismatched.order
    deadline_stat = StudyAssignment.objects.get(study=mismatched).sla_deadline
    client.force_login(ops_omar)
    # given the desk sees the match among the open matches by hand, with who made it and why
    html = client.get("/operations/worklist/").content.decode()
    row = html[html.index(f'data-testid="matched-row" data-study-id="{mismatched.pk}"') :].split("</tr>")[0]
    assert "A9002" in row and "looked like it" in row and "Undo match to A9002" in row
    # when they undo it with a reason
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/operations/worklist/{mismatched.pk}/unmatch/", {"reason": WRONG})
    # then the study has no order and is back to its images' patient, accession and priority
    assert response.status_code == 302 and response["Location"] == "/operations/worklist/"
    study = Study.objects.get(pk=mismatched.pk)
    assert (study.order_id, study.order_match) == (None, OrderMatch.NONE)
    assert (study.patient_id, study.accession_number) == (waiting.patient_id, "A9O01")
    assert (study.priority, study.is_stroke) == (PriorityClass.ROUTINE, False)
    # and it was routed again: its deadline is the routine one again, a re-route event says so
    assert StudyAssignment.objects.get(study=study).sla_deadline > deadline_stat
    rerouted = StudyEvent.objects.filter(study=study, kind=StudyEventKind.ROUTED).last()
    assert rerouted.detail["rerouted"] and rerouted.detail["priority"] == PriorityClass.ROUTINE
    # and the undo is in its history (who, why, what it had) and its audit row names the operator
    event = StudyEvent.objects.get(study=study, kind=StudyEventKind.ORDER_UNMATCHED)
    assert (event.actor, event.detail["reason"], event.detail["order"]) == (ops_omar, WRONG, wrong.pk)
    assert event.detail["had"] == {"priority": "STAT", "accession": "A9002", "patient": wrong.patient_id}
    assert event.detail["matched_by"] == ops_omar.pk
    entry = LogEntry.objects.get_for_object(study).order_by("-timestamp").first()
    assert entry.actor == ops_omar and "order" in entry.changes_dict
    # and it waits for its order again, the order is offered again, and the undo button is gone
    html = client.get("/operations/worklist/").content.decode()
    waiting_row = html[html.index(f'data-testid="waiting-row" data-study-id="{study.pk}"') :].split("</tr>")[
        0
    ]
    assert f'data-order-id="{wrong.pk}"' in waiting_row
    assert 'data-testid="matched-row"' not in html


def test_the_holders_claim_is_released_and_their_draft_follows_the_study(
    ops_omar,
    dr_neuro_il,
    mismatched,
    head_template,
    django_capture_on_commit_callbacks,
):
    # given a reader claimed the study and started the report: its history came from the wrong order
    StudyAssignment.objects.filter(study=mismatched).update(
        claimed_by=dr_neuro_il, claimed_at=timezone.now(), last_activity_at=timezone.now()
    )
    draft = report_start(study_id=mismatched.pk, user=dr_neuro_il, at=timezone.now())
    assert "Fall on warfarin." in draft.values["history"]
    draft.values["impression"] = "No acute hemorrhage."  # the reader's words
    draft.save()
    # when operations undo the match
    with django_capture_on_commit_callbacks(execute=True):
        client_event = _undo(mismatched, ops_omar)
    # then the claim is given back (a released event) and the reader is told on their own pages
    assert StudyAssignment.objects.get(study=mismatched).claimed_by_id is None
    released = StudyEvent.objects.get(study=mismatched, kind=StudyEventKind.RELEASED)
    assert (released.actor, released.detail["holder"]) == (ops_omar, dr_neuro_il.pk)
    notice = UserNotice.objects.get(user=dr_neuro_il, kind=NoticeKind.CLAIM_TAKEN_OVER)
    assert "not order A9002" in notice.text
    assert client_event.detail["claim_released"] == dr_neuro_il.pk
    # and the draft is kept: the reader's words stay, the merged history no longer has the wrong order's
    draft.refresh_from_db()
    assert draft.status == ReportStatus.DRAFT and draft.values["impression"] == "No acute hemorrhage."
    assert "warfarin" not in draft.values["history"]
    assert draft.values["technique"].startswith("CT HEAD WO.")  # the images' description, not the order's
    assert client_event.detail["draft"] == {
        "report": draft.pk,
        "refreshed": ["history", "technique"],
        "kept": [],
    }


def test_a_history_the_reader_rewrote_is_kept(ops_omar, dr_neuro_il, mismatched, head_template):
    StudyAssignment.objects.filter(study=mismatched).update(claimed_by=dr_neuro_il, claimed_at=timezone.now())
    draft = report_start(study_id=mismatched.pk, user=dr_neuro_il, at=timezone.now())
    draft.values["history"] = "Fall; on warfarin per the ED call."
    draft.save()
    event = _undo(mismatched, ops_omar)
    draft.refresh_from_db()
    assert draft.values["history"] == "Fall; on warfarin per the ED call."
    assert event.detail["draft"]["kept"] == ["history"]


def _undo(study, actor):
    from worklist.order_match import study_order_unmatch

    return study_order_unmatch(study_id=study.pk, actor=actor, reason=WRONG, at=timezone.now())


def test_rest_undo_answers_what_the_study_is_now(client, ops_omar, waiting, mismatched):
    client.force_login(ops_omar)
    response = _unmatch_api(client, mismatched.pk, reason=WRONG)
    assert response.status_code == 200, response.content
    assert response.json() == {
        "study": mismatched.pk,
        "order": None,
        "unmatched_order": mismatched.order_id,
        "order_match": "",
        "accession_number": "A9O01",
        "priority": "ROUTINE",
        "is_stroke": False,
        "claim_released": None,
    }
    # a second undo lost the race: 409, nothing written twice
    again = _unmatch_api(client, mismatched.pk, reason=WRONG)
    assert again.status_code == 409 and "no order" in again.json()["detail"]
    assert StudyEvent.objects.filter(study=mismatched, kind=StudyEventKind.ORDER_UNMATCHED).count() == 1


@pytest.mark.parametrize("signed", ["preliminary", "final"])
def test_a_signed_report_keeps_the_match_409(
    client,
    ops_omar,
    dr_neuro_il,
    mismatched,
    head_template,
    signed,
):
    # given a report on it is signed: its ORU went to the EMR under the order
    at = timezone.now()
    report = Report.objects.create(
        study=mismatched,
        template_version=head_template,
        author=dr_neuro_il,
        status=signed,
        signed_by=dr_neuro_il,
        signed_at=at,
        preliminary_at=at,
        signed_text="No acute intracranial abnormality.",
        signed_sha256="0" * 64,
    )
    if signed == "final":
        Study.objects.filter(pk=mismatched.pk).update(status=StudyStatus.FINAL)
    client.force_login(ops_omar)
    # when operations try to undo the match (REST, then the page)
    response = _unmatch_api(client, mismatched.pk, reason=WRONG)
    page = client.post(f"/operations/worklist/{mismatched.pk}/unmatch/", {"reason": WRONG})
    # then it is refused with the reason, and nothing changed
    assert response.status_code == 409 and "addendum" in response.json()["detail"], response.content
    assert page.status_code == 400 and "addendum" in page.content.decode()
    study = Study.objects.get(pk=mismatched.pk)
    assert (study.order_id, study.accession_number) == (mismatched.order_id, "A9002")
    assert not StudyEvent.objects.filter(study=study, kind=StudyEventKind.ORDER_UNMATCHED).exists()
    assert Report.objects.get(pk=report.pk).status == signed


def test_refusals_say_why(client, ops_omar, chicago, mismatched):
    client.force_login(ops_omar)
    # no reason, a blank one, one too long, a body that is not an object: 400 and nothing changes
    for body in ({}, {"reason": "  "}, {"reason": "x" * 301}, {"reason": 7}):
        response = _unmatch_api(client, mismatched.pk, **body)
        assert response.status_code == 400 and "reason" in response.json()["detail"], body
    assert client.post(f"/operations/worklist/{mismatched.pk}/unmatch/", {"reason": ""}).status_code == 400
    # a study matched by its accession (the hospital's own keys) is not undone here: 400
    by_accession = make_study(chicago, code="70450", status=StudyStatus.COMPLETE)
    Study.objects.filter(pk=by_accession.pk).update(order_match=OrderMatch.ACCESSION)
    response = _unmatch_api(client, by_accession.pk, reason=WRONG)
    assert response.status_code == 400 and "not by hand" in response.json()["detail"]
    # no such study: 404
    assert _unmatch_api(client, 999999, reason=WRONG).status_code == 404
    assert Study.objects.get(pk=mismatched.pk).order_id is not None


def test_only_operations_undo_and_another_facilitys_study_is_404(
    client, verified_client, director_dana, dr_neuro_il, admin_chicago, admin_lakeview, mismatched
):
    # another facility's admin does not even learn the study exists: 404, on the page and over REST
    client.force_login(admin_lakeview)
    assert _unmatch_api(client, mismatched.pk, reason=WRONG).status_code == 404
    assert client.post(f"/operations/worklist/{mismatched.pk}/unmatch/", {"reason": WRONG}).status_code == 404
    # those who see it but are not the operations desk: 403
    for user in (director_dana, admin_chicago):
        client.force_login(user)
        if user == director_dana:
            verified_client(user)  # a signing role passes its second factor first
        response = _unmatch_api(client, mismatched.pk, reason=WRONG)
        assert response.status_code == 403, user
        assert response.json()["detail"] == "Undoing an order match is for the operations desk."
        assert (
            client.post(f"/operations/worklist/{mismatched.pk}/unmatch/", {"reason": WRONG}).status_code
            == 403
        )
    # a radiologist not privileged there does not see it: 404; anonymous: 401
    verified_client(dr_neuro_il)
    assert _unmatch_api(client, mismatched.pk, reason=WRONG).status_code == 404
    client.logout()
    assert _unmatch_api(client, mismatched.pk, reason=WRONG).status_code == 401
    assert Study.objects.get(pk=mismatched.pk).order_id is not None
    assert not StudyEvent.objects.filter(study=mismatched, kind=StudyEventKind.ORDER_UNMATCHED).exists()


def test_documented_in_openapi_schema(client, ops_omar):
    client.force_login(ops_omar)
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    unmatch = schema["paths"]["/api/v1/worklist/{study_id}/order-unmatch/"]["post"]
    assert unmatch["operationId"] == "worklist_order_unmatch"
    assert {"200", "400", "403", "404", "409"} <= set(unmatch["responses"])


def test_a_stroke_order_undone_leaves_no_stroke_and_a_taken_accession_is_not_reused(
    chicago, ops_omar, waiting, django_capture_on_commit_callbacks
):
    # given the CT matched by mistake to a code-stroke order: it became a stroke
    stroke = order_open(chicago, "A9003", mrn="MRN1234", priority=PriorityClass.STROKE)
    with django_capture_on_commit_callbacks(execute=True):
        study_order_match(
            study_id=waiting.pk, order_id=stroke.pk, actor=ops_omar, reason="x", at=timezone.now()
        )
    assert Study.objects.filter(pk=waiting.pk, is_stroke=True, priority=PriorityClass.STROKE).exists()
    assert StudyEscalation.objects.filter(study=waiting, step=EscalationStep.STROKE_ALERT).exists()
    # and meanwhile another study arrived with the accession the CT's images carried
    newcomer = make_study(chicago, status=StudyStatus.COMPLETE)
    Study.objects.filter(pk=newcomer.pk).update(accession_number="A9O01")
    # when the match is undone
    with django_capture_on_commit_callbacks(execute=True):
        _undo(waiting, ops_omar)
    # then it is routine and no stroke again, and keeps no accession rather than another study's
    study = Study.objects.get(pk=waiting.pk)
    assert (study.priority, study.is_stroke, study.accession_number) == (PriorityClass.ROUTINE, False, "")
    assert (
        StudyEvent.objects.filter(study=study, kind=StudyEventKind.ROUTED).last().detail["priority"]
        == "ROUTINE"
    )
    # and the stroke alert that fired stays on record, but its later steps no longer page anyone
    later = timezone.now() + timedelta(hours=1)
    assert stroke_step_fire(study_id=study.pk, step=EscalationStep.STROKE_DIRECTOR, at=later) is None
    assert StudyEscalation.objects.filter(study=study, step=EscalationStep.STROKE_ALERT).exists()
