"""The live channel's resync and acknowledgement (worklist.live, /live/…): the alerts waiting for a
user follow the worklist's audiences — an eligible reader, operations from the 2-minute step, the
director from the 5-minute step, never a reader licensed elsewhere — and only the alert's audience may
acknowledge it, once per step, recorded with who and when."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from facilities.models import PriorityClass
from tests.conftest import enrol_totp
from tests.worklist.conftest import make_eligible, make_study
from worklist.escalation import stroke_step_fire
from worklist.live import AlertNotFound, alert_acknowledge, alerts_pending
from worklist.models import AlertAcknowledgement, EscalationStep
from worklist.services import study_claim, study_route

pytestmark = pytest.mark.django_db


def routed_stroke(facility):
    study = make_study(
        facility,
        code="70450",
        text="CT HEAD W/O CONTRAST",
        priority=PriorityClass.STROKE,
        is_stroke=True,
        first_received_at=timezone.now(),
    )
    study_route(study_id=study.pk)
    return study


def steps_pending(user) -> list[tuple[int, str]]:
    return [(a["study"]["id"], a["step"]) for a in alerts_pending(user, at=timezone.now())]


def test_pending_alerts_follow_the_audiences(
    dr_neuro_il, dr_msk_wi, ops_omar, director_dana, chicago, lakeview, django_capture_on_commit_callbacks
):
    # given the neuro reader eligible at Lakeshore, the WI reader only at Lakeview, and a stroke at Lakeshore
    make_eligible(dr_neuro_il, chicago)
    make_eligible(dr_msk_wi, lakeview)
    with django_capture_on_commit_callbacks(execute=False):
        stroke = routed_stroke(chicago)
    # then at once: the eligible reader only
    assert steps_pending(dr_neuro_il) == [(stroke.pk, EscalationStep.STROKE_ALERT)]
    assert steps_pending(dr_msk_wi) == []
    assert steps_pending(ops_omar) == []
    assert steps_pending(director_dana) == []
    # at 2 minutes: operations too (and the reader is rung again at the new step)
    later = timezone.now() + timedelta(minutes=2)
    with django_capture_on_commit_callbacks(execute=False):
        stroke_step_fire(study_id=stroke.pk, step=EscalationStep.STROKE_READERS, at=later)
    assert steps_pending(dr_neuro_il) == [(stroke.pk, EscalationStep.STROKE_READERS)]
    assert steps_pending(ops_omar) == [(stroke.pk, EscalationStep.STROKE_READERS)]
    assert steps_pending(director_dana) == []
    # at 5 minutes: the director and operations
    with django_capture_on_commit_callbacks(execute=False):
        stroke_step_fire(
            study_id=stroke.pk, step=EscalationStep.STROKE_DIRECTOR, at=later + timedelta(minutes=3)
        )
    assert steps_pending(director_dana) == [(stroke.pk, EscalationStep.STROKE_DIRECTOR)]
    assert steps_pending(ops_omar) == [(stroke.pk, EscalationStep.STROKE_DIRECTOR)]
    assert steps_pending(dr_msk_wi) == []
    # once claimed, nobody is alerted any more
    with django_capture_on_commit_callbacks(execute=False):
        study_claim(study_id=stroke.pk, user=dr_neuro_il, at=timezone.now())
    assert steps_pending(dr_neuro_il) == steps_pending(ops_omar) == steps_pending(director_dana) == []


def test_acknowledging_is_recorded_and_only_for_the_alerts_audience(
    dr_neuro_il, dr_msk_wi, chicago, lakeview
):
    make_eligible(dr_neuro_il, chicago)
    make_eligible(dr_msk_wi, lakeview)
    stroke = routed_stroke(chicago)
    # a reader licensed elsewhere cannot acknowledge (nor learn of) it; nor a step that does not exist
    with pytest.raises(AlertNotFound):
        alert_acknowledge(dr_msk_wi, study_id=stroke.pk, step=EscalationStep.STROKE_ALERT, at=timezone.now())
    with pytest.raises(AlertNotFound):
        alert_acknowledge(
            dr_neuro_il, study_id=stroke.pk, step=EscalationStep.STROKE_READERS, at=timezone.now()
        )
    with pytest.raises(AlertNotFound):  # the director's step is not a reader's alert
        alert_acknowledge(
            dr_neuro_il, study_id=stroke.pk, step=EscalationStep.STROKE_DIRECTOR, at=timezone.now()
        )
    # the eligible reader can: who and when are kept, and the alert no longer waits for them
    at = timezone.now()
    ack = alert_acknowledge(dr_neuro_il, study_id=stroke.pk, step=EscalationStep.STROKE_ALERT, at=at)
    assert (ack.user, ack.study_id, ack.kind, ack.at) == (
        dr_neuro_il,
        stroke.pk,
        EscalationStep.STROKE_ALERT,
        at,
    )
    assert steps_pending(dr_neuro_il) == []


def test_the_http_ends_refuse_strangers_and_bad_input(
    client, verified_client, dr_neuro_il, dr_msk_wi, chicago, lakeview
):
    enrol_totp(dr_msk_wi)
    make_eligible(dr_neuro_il, chicago)
    make_eligible(dr_msk_wi, lakeview)
    stroke = routed_stroke(chicago)
    stroke.patient.family_name = "Rivera"
    stroke.patient.save()
    # anonymous: 401, not a login redirect (a script asks)
    assert client.get("/live/pending/").status_code == 401
    assert client.post("/live/acknowledge/", "{}", content_type="application/json").status_code == 401
    # the WI reader: nothing pending, and 404 acknowledging the Lakeshore stroke
    verified_client(dr_msk_wi)
    assert client.get("/live/pending/").json() == {"alerts": [], "notices": [], "locked": False}
    body = json.dumps({"study": stroke.pk, "step": "stroke_alert"})
    refused = client.post("/live/acknowledge/", body, content_type="application/json")
    assert refused.status_code == 404 and refused.json()["detail"]
    bad = client.post("/live/acknowledge/", "not json", content_type="application/json")
    assert bad.status_code == 400 and "study" in bad.json()["detail"]
    # the neuro reader: the stroke, without the patient's name, then acknowledged
    client.logout()
    verified_client(dr_neuro_il)
    pending = client.get("/live/pending/")
    assert pending["Cache-Control"] == "no-store, private"
    (alert,) = pending.json()["alerts"]
    assert alert["study"]["id"] == stroke.pk and alert["study"]["facility_name"] == chicago.name
    assert stroke.patient.family_name not in pending.content.decode()
    done = client.post("/live/acknowledge/", body, content_type="application/json")
    assert done.status_code == 200 and done.json()["by"] == str(dr_neuro_il)
    assert AlertAcknowledgement.objects.filter(user=dr_neuro_il, study=stroke).count() == 1
    assert client.get("/live/pending/").json() == {"alerts": [], "notices": [], "locked": False}


def test_every_signed_in_page_carries_the_channel(verified_client, dr_neuro_il):
    html = verified_client(dr_neuro_il).get("/account/security/").content.decode()
    assert 'id="live-channel"' in html and "readroom/live.js" in html
    assert 'data-steps="stroke_alert stroke_readers"' in html
    assert "<script>" not in html and "onclick" not in html  # CSP-ready: no inline script or handler


def test_a_locked_session_serves_no_phi_and_unlocks_with_one_secret(
    verified_client, dr_neuro_il, ops_omar, chicago, django_capture_on_commit_callbacks
):
    from credentialing.screen_lock import screen_lock_seconds
    from tests.conftest import PASSWORD

    make_eligible(dr_neuro_il, chicago)
    with django_capture_on_commit_callbacks(execute=False):
        stroke = routed_stroke(chicago)
    stroke.patient.family_name = "Rivera"
    stroke.patient.save()
    client = verified_client(dr_neuro_il)
    # when the page locks the session
    assert client.post("/live/lock/").json() == {"state": "locked"}
    # then pages, the API and claims are refused (423) and the lock page names nobody
    page = client.get(f"/studies/{stroke.pk}/report/", HTTP_ACCEPT="text/html")
    assert page.status_code == 423 and b"Screen locked" in page.content and b"Rivera" not in page.content
    assert b'data-locked="true"' in page.content
    claim = client.post(f"/api/v1/worklist/{stroke.pk}/claim/")
    assert claim.status_code == 423 and "locked" in claim.json()["detail"]
    # and the waiting stroke is told without PHI: facility, class — no procedure, no accession
    pending = client.get("/live/pending/").json()
    assert pending["locked"] is True
    (alert,) = pending["alerts"]
    assert set(alert["study"]) == {"id", "facility", "facility_name", "priority", "is_stroke", "claimed_by"}
    # a wrong secret keeps it locked; the password unlocks it in one step
    wrong = client.post("/live/unlock/", json.dumps({"secret": "nope"}), content_type="application/json")
    assert wrong.status_code == 403 and client.post(f"/api/v1/worklist/{stroke.pk}/claim/").status_code == 423
    ok = client.post("/live/unlock/", json.dumps({"secret": PASSWORD}), content_type="application/json")
    assert ok.json() == {"state": "live", "lock_after": screen_lock_seconds(dr_neuro_il)}
    with django_capture_on_commit_callbacks(execute=False):
        assert client.post(f"/api/v1/worklist/{stroke.pk}/claim/").status_code == 200


def test_the_lock_refuses_anonymous_and_bad_input(client, ops_omar):
    assert client.post("/live/lock/").status_code == 401
    assert client.post("/live/unlock/", "{}", content_type="application/json").status_code == 401
    client.force_login(ops_omar)
    assert client.post("/live/unlock/", "[1]", content_type="application/json").status_code == 400


def test_a_dead_lettered_result_notice_is_acknowledged_by_operations_only(
    client, ops_omar, verified_client, dr_neuro_il
):
    from django.utils import timezone

    from worklist.models import NoticeKind
    from worklist.notices import notice_key, operations_notice_send

    (notice,) = operations_notice_send(
        kind=NoticeKind.RESULT_DEAD_LETTERED,
        at=timezone.now(),
        text="ORU^R01 RR42: AR",
        about="dead_letter:42",
    )
    body = json.dumps({"notice": notice_key(notice)})
    # the old operations key is no longer a notice of its own (one notice per operations user)
    client.force_login(ops_omar)
    old = json.dumps({"notice": "dead_letter:42"})
    assert client.post("/live/acknowledge/", old, content_type="application/json").status_code == 404
    client.logout()
    # a reader has no such notice
    verified_client(dr_neuro_il)
    assert client.post("/live/acknowledge/", body, content_type="application/json").status_code == 404
    client.logout()
    # operations: recorded, who and when
    client.force_login(ops_omar)
    done = client.post("/live/acknowledge/", body, content_type="application/json")
    assert done.status_code == 200 and done.json()["by"] == str(ops_omar)
    ack = AlertAcknowledgement.objects.get(kind=notice_key(notice))
    assert ack.user == ops_omar and ack.study is None
    bad = client.post(
        "/live/acknowledge/", json.dumps({"notice": "nonsense"}), content_type="application/json"
    )
    assert bad.status_code == 404


def _acknowledged_on_the_worklist(client) -> set[str]:
    import re

    html = client.get("/worklist/rows/", headers={"HX-Request": "true"}).content.decode()
    return set(re.search(r'data-acknowledged-strokes="([\d ]*)"', html).group(1).split())


def test_a_stroke_acknowledged_anywhere_is_acknowledged_on_every_worklist(
    verified_client, dr_neuro_il, dr_msk_wi, chicago, lakeview, django_capture_on_commit_callbacks
):
    # given an eligible reader's worklist with a waiting code stroke, not yet acknowledged
    make_eligible(dr_neuro_il, chicago)
    with django_capture_on_commit_callbacks(execute=False):
        stroke = routed_stroke(chicago)
    client = verified_client(dr_neuro_il)
    assert _acknowledged_on_the_worklist(client) == set()
    # when they acknowledge it on the lock (its live banner, the step it names)
    ack = {"study": stroke.pk, "step": EscalationStep.STROKE_ALERT}
    assert client.post("/live/acknowledge/", ack, content_type="application/json").status_code == 200
    # then every worklist render carries the server's record: no page raises its banner again
    assert _acknowledged_on_the_worklist(client) == {str(stroke.pk)}


def test_the_worklists_own_acknowledge_records_the_latest_step(
    verified_client, dr_neuro_il, dr_msk_wi, chicago, lakeview, django_capture_on_commit_callbacks
):
    make_eligible(dr_neuro_il, chicago)
    make_eligible(dr_msk_wi, lakeview)
    with django_capture_on_commit_callbacks(execute=False):
        stroke = routed_stroke(chicago)
        later = timezone.now() + timedelta(minutes=2)
        stroke_step_fire(study_id=stroke.pk, step=EscalationStep.STROKE_READERS, at=later)
    # the worklist's banner knows the stroke, not its step: "stroke" is the latest one that alerts them
    body = {"study": stroke.pk, "step": "stroke"}
    assert alert_acknowledge(dr_neuro_il, study_id=stroke.pk, step="stroke", at=timezone.now()).kind == (
        EscalationStep.STROKE_READERS
    )
    assert steps_pending(dr_neuro_il) == []
    # and a reader licensed elsewhere still cannot acknowledge (nor learn of) it
    enrol_totp(dr_msk_wi)
    client = verified_client(dr_msk_wi)
    assert client.post("/live/acknowledge/", body, content_type="application/json").status_code == 404
