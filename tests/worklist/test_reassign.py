"""POST /api/v1/worklist/<study>/reassign/: operations only, with a reason, to an eligible reader or
back to the pool, compare-and-set against the holder the operator saw."""

from __future__ import annotations

import pytest
from django.utils import timezone

from tests.worklist.conftest import Screens, make_study
from worklist.groups import OPERATIONS_GROUP, user_group
from worklist.models import StudyAssignment, StudyEvent, StudyEventKind
from worklist.services import study_claim, study_route

pytestmark = pytest.mark.django_db


@pytest.fixture
def held_ct(chicago, neuro_reader):
    study = make_study(chicago, code="70450", description="CT HEAD WO")
    study_route(study_id=study.pk)
    study_claim(study_id=study.pk, user=neuro_reader, at=timezone.now())
    return study


def _reassign(client, study, **body):
    return client.post(f"/api/v1/worklist/{study.pk}/reassign/", body, content_type="application/json")


def holder(study):
    return StudyAssignment.objects.get(study=study).claimed_by


def test_operations_reassign_with_a_reason_and_every_screen_hears(
    client, ops_omar, neuro_reader, other_neuro_reader, held_ct, django_capture_on_commit_callbacks
):
    # given dr_neuro_il holds the study and has stopped answering
    client.force_login(ops_omar)
    screens = Screens([OPERATIONS_GROUP, user_group(neuro_reader.pk), user_group(other_neuro_reader.pk)])
    # when operations gives it to the other neuro reader, saying whom they saw holding it
    with django_capture_on_commit_callbacks(execute=True):
        response = _reassign(
            client,
            held_ct,
            to=other_neuro_reader.pk,
            reason="not answering the phone",
            **{"from": neuro_reader.pk},
        )
    # then the other reader holds it, and the event keeps the reason, the old and the new holder
    assert response.status_code == 200, response.content
    assert response.json()["claimed_by"] == {"id": other_neuro_reader.pk, "name": "Dr dr_neuro_two"}
    assert holder(held_ct) == other_neuro_reader
    [event] = StudyEvent.objects.filter(study=held_ct, kind=StudyEventKind.REASSIGNED)
    assert event.actor == ops_omar
    assert event.detail == {
        "from": neuro_reader.pk,
        "to": other_neuro_reader.pk,
        "reason": "not answering the phone",
    }
    # and the old holder, the new holder and operations are told (without the reason)
    for group, events in screens.received().items():
        events = [e for e in events if e["type"] != "notice"]  # each reader's own: test_notices.py
        assert [(e["type"], e["study"]["claimed_by"], e["reassigned"]) for e in events] == [
            ("study.claimed", other_neuro_reader.pk, {"from": neuro_reader.pk, "to": other_neuro_reader.pk})
        ], group
        assert "not answering" not in str(events)


def test_operations_return_a_study_to_the_pool(client, ops_omar, neuro_reader, held_ct):
    client.force_login(ops_omar)
    response = _reassign(client, held_ct, to=None, reason="reader went home sick")
    assert response.status_code == 200, response.content
    assert response.json()["claimed_by"] is None
    assert holder(held_ct) is None
    assert StudyEvent.objects.get(study=held_ct, kind=StudyEventKind.REASSIGNED).detail["to"] is None


def test_a_radiologist_may_not_reassign(verified_client, neuro_reader, other_neuro_reader, held_ct):
    client = verified_client(neuro_reader)
    response = _reassign(client, held_ct, to=other_neuro_reader.pk, reason="swap")
    assert response.status_code == 403
    assert holder(held_ct) == neuro_reader


@pytest.mark.parametrize("who", ["mso_mary", "admin_chicago"])
def test_other_roles_may_not_reassign(request, client, who, other_neuro_reader, held_ct):
    client.force_login(request.getfixturevalue(who))
    assert _reassign(client, held_ct, to=other_neuro_reader.pk, reason="swap").status_code == 403


def test_an_ineligible_target_is_403_with_the_reasons(
    client, ops_omar, dr_msk_wi, msk_wi_credentials, held_ct
):
    client.force_login(ops_omar)
    response = _reassign(client, held_ct, to=dr_msk_wi.pk, reason="cover")
    assert response.status_code == 403
    reasons = response.json()["reasons"]
    assert "no active licence in IL" in reasons
    assert any(r.startswith("no privileges at Lakeshore") for r in reasons)
    assert "not a neuroradiologist" in reasons
    assert holder(held_ct).username == "dr_neuro_il"


def test_a_stale_from_is_409_naming_the_holder(client, ops_omar, neuro_reader, other_neuro_reader, held_ct):
    # given the operator saw the study unclaimed, but dr_neuro_il has claimed it since
    client.force_login(ops_omar)
    response = _reassign(client, held_ct, to=other_neuro_reader.pk, reason="balance load", **{"from": None})
    # then nothing changes and the operator learns who holds it
    assert response.status_code == 409
    assert response.json()["claimed_by"] == {"id": neuro_reader.pk, "name": "Dr dr_neuro_il"}
    assert holder(held_ct) == neuro_reader
    assert not StudyEvent.objects.filter(kind=StudyEventKind.REASSIGNED).exists()


@pytest.mark.parametrize(
    "body, says",
    [
        ({"reason": "x"}, "to"),
        ({"to": None, "reason": " "}, "reason"),
        ({"to": 987654, "reason": "x"}, "No active user 987654"),
    ],
)
def test_bad_requests_are_400(client, ops_omar, held_ct, body, says):
    client.force_login(ops_omar)
    response = _reassign(client, held_ct, **body)
    assert response.status_code == 400
    assert says in str(response.json())


def test_reassigning_to_the_holder_is_400(client, ops_omar, neuro_reader, held_ct):
    client.force_login(ops_omar)
    response = _reassign(client, held_ct, to=neuro_reader.pk, reason="x")
    assert response.status_code == 400
    assert "already holds" in response.json()["detail"]


def test_unknown_study_is_404(client, ops_omar):
    client.force_login(ops_omar)
    response = client.post(
        "/api/v1/worklist/999999/reassign/", {"to": None, "reason": "x"}, content_type="application/json"
    )
    assert response.status_code == 404


def test_documented_in_openapi_schema(client, ops_omar):
    client.force_login(ops_omar)
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/v1/worklist/{study_id}/reassign/"]["post"]
    assert operation["operationId"] == "worklist_reassign"
    assert {"200", "400", "403", "404", "409"} <= set(operation["responses"])
    body = schema["components"]["schemas"]["ReassignRequest"]
    assert {"to", "reason", "from"} <= set(body["properties"])


def test_the_reassign_page_is_for_operations_only_and_names_the_eligible(
    client, verified_client, ops_omar, director_dana, neuro_reader, other_neuro_reader, held_ct
):
    # the medical director sees the desk's list but may not reassign: the page refuses them
    verified_client(director_dana)
    refused = client.get(f"/operations/worklist/{held_ct.pk}/reassign/")
    assert refused.status_code == 403
    assert b"Reassignment is for the operations desk." in refused.content
    url = f"/operations/worklist/{held_ct.pk}/reassign/"
    assert client.post(url, {"to": other_neuro_reader.pk}).status_code == 403
    assert holder(held_ct) == neuro_reader
    # operations gets every reader, eligible ones offered with their load
    client.force_login(ops_omar)
    page = client.get(f"/operations/worklist/{held_ct.pk}/reassign/")
    assert page.status_code == 200
    offered = [c.reader for c in page.context["candidates"] if c.eligible and not c.holds_it]
    assert offered == [other_neuro_reader]
    # a POST without a reason is refused by the service and changes nothing
    page = client.post(
        f"/operations/worklist/{held_ct.pk}/reassign/", {"to": other_neuro_reader.pk, "from": neuro_reader.pk}
    )
    assert page.status_code == 400
    assert page.context["problem"] == "Give a reason for the reassignment."
    assert holder(held_ct) == neuro_reader
