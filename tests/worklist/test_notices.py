"""Notices to one user on the live channel (issue 14, worklist.notices): a study pushed to a reader, a
claim taken over by operations — each reaches its addressee's own socket group and nobody else's,
is kept for the resync, and only its addressee may acknowledge it."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from credentialing.models import FacilityPrivilege
from tests.conftest import make_radiologist
from tests.worklist.conftest import Screens, make_eligible, make_study
from tests.worklist.test_assignment import push_chicago  # noqa: F401
from worklist.assignment import study_reassign
from worklist.groups import OPERATIONS_GROUP, user_group
from worklist.models import AlertAcknowledgement, NoticeKind, UserNotice
from worklist.services import study_claim, study_route

pytestmark = pytest.mark.django_db


def notices(received: dict, group: str) -> list[dict]:
    return [e["notice"] for e in received[group] if e["type"] == "notice"]


def test_a_pushed_study_is_told_to_the_reader_it_went_to_and_nobody_else(
    push_chicago,  # noqa: F811
    neuro_reader,
    other_neuro_reader,
    django_capture_on_commit_callbacks,
):
    # given two eligible neuro readers on shift at a push facility, the second on its core team
    FacilityPrivilege.objects.filter(profile__user=other_neuro_reader).update(core_team=True)
    screens = Screens([OPERATIONS_GROUP, user_group(neuro_reader.pk), user_group(other_neuro_reader.pk)])
    # when a head CT is routed and pushed
    study = make_study(push_chicago, code="70450", text="CT HEAD W/O CONTRAST")
    study.patient.family_name = "Rivera"
    study.patient.save()
    with django_capture_on_commit_callbacks(execute=True):
        study_route(study_id=study.pk)
    # then the core-team reader's pages get the notice, with the way to open it
    received = screens.received()
    [notice] = notices(received, user_group(other_neuro_reader.pk))
    assert notice["kind"] == NoticeKind.STUDY_ASSIGNED and notice["title"] == "Study assigned to you"
    assert notice["facility"] == "Lakeshore Medical Center" and notice["study"] == study.pk
    assert notice["text"] == f"CT HEAD W/O CONTRAST · {study.accession_number}"
    assert notice["url"] == f"/studies/{study.pk}/open/"
    assert "Rivera" not in json.dumps(notice)  # workflow metadata only
    # and neither the other reader nor operations
    assert notices(received, user_group(neuro_reader.pk)) == []
    assert notices(received, OPERATIONS_GROUP) == []
    assert UserNotice.objects.get().user == other_neuro_reader


def test_a_claim_taken_over_is_told_to_the_old_and_the_new_holder_only(
    ops_omar, neuro_reader, other_neuro_reader, chicago, django_capture_on_commit_callbacks
):
    third = make_radiologist("dr_neuro_three", "neuro")
    make_eligible(third, chicago)
    study = make_study(chicago, code="70450", text="CT HEAD W/O CONTRAST")
    study_route(study_id=study.pk)
    study_claim(study_id=study.pk, user=neuro_reader, at=timezone.now())
    groups = [user_group(u.pk) for u in (neuro_reader, other_neuro_reader, third)]
    screens = Screens([OPERATIONS_GROUP, *groups])
    # when operations give the study to the other neuro reader
    with django_capture_on_commit_callbacks(execute=True):
        study_reassign(
            study_id=study.pk, actor=ops_omar, to=other_neuro_reader, reason="no answer", at=timezone.now()
        )
    received = screens.received()
    # then the old holder hears it was taken over (to whom), the new one that it is theirs
    [taken] = notices(received, groups[0])
    assert taken["kind"] == NoticeKind.CLAIM_TAKEN_OVER
    assert taken["text"].endswith("now with Dr dr_neuro_two (operations)")
    assert "no answer" not in json.dumps(taken)  # the reason is operations' business
    [given] = notices(received, groups[1])
    assert given["kind"] == NoticeKind.STUDY_ASSIGNED and given["url"] == f"/studies/{study.pk}/open/"
    # and the third eligible reader and operations get no notice (they see the row move only)
    assert notices(received, groups[2]) == [] and notices(received, OPERATIONS_GROUP) == []


def test_a_notice_waits_for_its_addressee_and_only_they_acknowledge_it(
    client, verified_client, neuro_reader, other_neuro_reader, chicago
):
    from worklist.notices import user_notice_send

    study = make_study(chicago, code="70450", text="CT HEAD W/O CONTRAST")
    notice = user_notice_send(
        user_id=neuro_reader.pk, kind=NoticeKind.STUDY_ASSIGNED, at=timezone.now(), study=study
    )
    key = f"notice:{notice.pk}"
    body = json.dumps({"notice": key})
    # another reader: not in their resync, and theirs to acknowledge it is not
    verified_client(other_neuro_reader)
    assert client.get("/live/pending/").json()["notices"] == []
    assert client.post("/live/acknowledge/", body, content_type="application/json").status_code == 404
    client.logout()
    # the addressee: in the resync (a page opened after it was sent shows it), then acknowledged once
    verified_client(neuro_reader)
    [pending] = client.get("/live/pending/").json()["notices"]
    assert pending["key"] == key and pending["kind"] == "study_assigned"
    done = client.post("/live/acknowledge/", body, content_type="application/json")
    assert done.status_code == 200 and done.json()["by"] == str(neuro_reader)
    ack = AlertAcknowledgement.objects.get(kind=key)
    assert (ack.user, ack.study_id) == (neuro_reader, study.pk)
    assert client.get("/live/pending/").json()["notices"] == []
    assert client.post("/live/acknowledge/", body, content_type="application/json").status_code == 404
    bad = json.dumps({"notice": "notice:abc"})
    assert client.post("/live/acknowledge/", bad, content_type="application/json").status_code == 404
