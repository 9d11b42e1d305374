"""The one-click match on the operations worklist (issue #13, docs/orders.md): a study waiting for
its order is matched by operations to an open order of its own facility; the study takes the
order's priority and accession and is routed again; who, when and why are its history and audit."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from auditlog.models import LogEntry
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_otp.plugins.otp_totp.models import TOTPDevice

from facilities.models import PriorityClass
from imaging.models import OrderMatch, OrderStatus, Study
from tests.worklist.conftest import make_study, order_open
from worklist.models import StudyEvent, StudyEventKind
from worklist.order_match import MatchNotPermitted, MatchRefused, study_order_match

pytestmark = pytest.mark.django_db


def _match(client, study, order, reason="accession mistyped at the CT console (O for 0)"):
    return client.post(f"/operations/worklist/{study.pk}/match/", {"order": order.pk, "reason": reason})


def test_operations_match_a_waiting_study_in_one_click_and_it_takes_the_orders_priority(
    client, ops_omar, chicago, lakeview, waiting, django_capture_on_commit_callbacks
):
    # given the STAT order the CT answers, another patient's order, a cancelled one and Lakeview's
    stat = order_open(chicago, "A9001", priority=PriorityClass.STAT)
    other_patient = order_open(chicago, "A9002", mrn="MRN1234")
    cancelled = order_open(chicago, "A9003", status=OrderStatus.CANCELLED)
    elsewhere = order_open(lakeview, "A9004")
    client.force_login(ops_omar)
    # when operations open their worklist
    html = client.get("/operations/worklist/").content.decode()
    row = html[html.index(f'data-testid="waiting-row" data-study-id="{waiting.pk}"') :].split("</tr>")[0]
    # then the waiting row offers the open orders of its own facility, the patient's own first
    offered = [int(i) for i in re.findall(r'data-testid="match-order" data-order-id="(\d+)"', row)]
    assert offered == [stat.pk, other_patient.pk]
    assert cancelled.pk not in offered and elsewhere.pk not in offered
    # when they press its button with a reason
    with django_capture_on_commit_callbacks(execute=True):
        response = _match(client, waiting, stat)
    # then the study has the order, by hand, with its priority and accession (the ORU echoes it)
    assert response.status_code == 302 and response["Location"] == "/operations/worklist/"
    study = Study.objects.get(pk=waiting.pk)
    assert (study.order_id, study.order_match) == (stat.pk, OrderMatch.MANUAL)
    assert (study.priority, study.accession_number) == (PriorityClass.STAT, "A9001")
    # and the match is in the study's history: who, when, because
    event = StudyEvent.objects.get(study=study, kind=StudyEventKind.ORDER_MATCHED)
    assert event.actor == ops_omar
    assert event.detail["reason"] == "accession mistyped at the CT console (O for 0)"
    assert event.detail["before"] == {
        "priority": PriorityClass.ROUTINE,
        "accession": "A9O01",
        "patient": waiting.patient_id,
        "is_stroke": False,
    }
    assert (event.detail["order"], event.detail["how"]) == (stat.pk, "manual")
    # and routed again after the match, now STAT with its deadline
    rerouted = StudyEvent.objects.filter(study=study, kind=StudyEventKind.ROUTED, at__gte=event.at).get()
    assert rerouted.detail["priority"] == PriorityClass.STAT and rerouted.detail["rerouted"]
    first = StudyEvent.objects.filter(study=study, kind=StudyEventKind.ROUTED).first()
    assert first.detail["priority"] == PriorityClass.ROUTINE
    assert study.assignment.sla_deadline == study.completed_at + timedelta(minutes=chicago.sla_stat_minutes)
    assert study.assignment.sla_deadline < parse_datetime(first.detail["sla_deadline"])  # was ROUTINE's
    # and the audit log names the operator for the change of the study
    entry = LogEntry.objects.get_for_object(study).filter(action=LogEntry.Action.UPDATE).latest("timestamp")
    assert entry.actor == ops_omar
    assert entry.changes_dict["order_match"] == ["", "manual"]
    # and the study no longer waits
    html = client.get("/operations/worklist/").content.decode()
    assert f'data-testid="waiting-row" data-study-id="{waiting.pk}"' not in html


def test_another_facilitys_order_is_refused_and_nothing_changes(client, ops_omar, lakeview, waiting):
    # given an open Lakeview order for the same MRN
    elsewhere = order_open(lakeview, "A9001")
    client.force_login(ops_omar)
    # when operations post it for the Chicago study
    response = _match(client, waiting, elsewhere)
    # then 400 says why, and the study is as it was
    assert response.status_code == 400
    assert "another facility" in response.content.decode()
    study = Study.objects.get(pk=waiting.pk)
    assert (study.order_id, study.order_match, study.accession_number) == (None, "", "A9O01")
    assert not StudyEvent.objects.filter(kind=StudyEventKind.ORDER_MATCHED).exists()


@pytest.mark.parametrize("who", ["director_dana", "dr_neuro_il", "admin_chicago"])
def test_only_the_operations_desk_may_match(request, client, verified_client, chicago, waiting, who):
    user = request.getfixturevalue(who)
    order = order_open(chicago, "A9001")
    if TOTPDevice.objects.filter(user=user, confirmed=True).exists():
        verified_client(user)  # a signing role passes its second factor first
    else:
        client.force_login(user)
    # the director sees the desk but no match buttons; nobody but operations may post a match
    page = client.get("/operations/worklist/").content.decode()
    assert 'data-testid="match-form"' not in page
    response = _match(client, waiting, order)
    assert response.status_code == 403
    assert Study.objects.get(pk=waiting.pk).order_id is None
    with pytest.raises(MatchNotPermitted):
        study_order_match(study_id=waiting.pk, order_id=order.pk, actor=user, reason="x", at=timezone.now())


def test_a_match_needs_a_reason_an_open_order_and_a_study_still_waiting(ops_omar, chicago, waiting):
    order, taken = order_open(chicago, "A9001"), order_open(chicago, "A9002")
    Study.objects.filter(pk=make_study(chicago).pk).update(order=taken)  # it has its images already
    now = timezone.now()
    for order_id, reason, problem in (
        (order.pk, "  ", "Give a reason"),
        (taken.pk, "same patient", "already has its study"),
        (987654, "same patient", "No such order"),
    ):
        with pytest.raises(MatchRefused, match=problem):
            study_order_match(study_id=waiting.pk, order_id=order_id, actor=ops_omar, reason=reason, at=now)
    study_order_match(study_id=waiting.pk, order_id=order.pk, actor=ops_omar, reason="same patient", at=now)
    # a second match of the same study (another operator a moment later) is refused, not a swap
    with pytest.raises(MatchRefused, match="already has its order"):
        study_order_match(study_id=waiting.pk, order_id=taken.pk, actor=ops_omar, reason="again", at=now)
