"""The manual order match over REST (docs/orders.md): ``GET /api/v1/worklist/waiting-for-order/``
lists what the operations worklist lists, with its candidate orders; ``POST …/<study>/order-match/``
is the page's service — the same checks, study event and audit — and every refusal is a 4xx that
says why."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry

from facilities.models import PriorityClass
from imaging.models import OrderMatch, OrderStatus, Study, StudyStatus
from tests.worklist.conftest import make_study, order_open
from worklist.models import StudyEvent, StudyEventKind

pytestmark = pytest.mark.django_db

WAITING_URL = "/api/v1/worklist/waiting-for-order/"


def _match(client, study_id: int, **body):
    return client.post(f"/api/v1/worklist/{study_id}/order-match/", body, content_type="application/json")


def _unchanged(study: Study) -> None:
    now = Study.objects.get(pk=study.pk)
    assert (now.order_id, now.order_match, now.accession_number) == (None, "", "A9O01")
    assert not StudyEvent.objects.filter(study=study, kind=StudyEventKind.ORDER_MATCHED).exists()


def test_an_integration_engine_lists_the_waiting_study_and_matches_it_to_its_stat_order(
    client, ops_omar, chicago, lakeview, waiting, django_capture_on_commit_callbacks
):
    # given the STAT order the CT answers, another patient's order, a cancelled one and Lakeview's
    stat = order_open(chicago, "A9001", priority=PriorityClass.STAT)
    other_patient = order_open(chicago, "A9002", mrn="MRN1234")
    order_open(chicago, "A9003", status=OrderStatus.CANCELLED)
    order_open(lakeview, "A9004")
    client.force_login(ops_omar)
    # when the engine asks what waits for its order
    listed = client.get(WAITING_URL)
    # then the study is there with the page's candidates: its facility's open orders, its patient's first
    assert listed.status_code == 200, listed.content
    [row] = listed.json()["results"]
    assert (row["id"], row["facility"], row["accession_number"]) == (waiting.pk, "CHI-L1", "A9O01")
    assert row["waited_minutes"] in (44, 45, 46) and row["orderless_wait_minutes"] == 30
    assert row["patient"]["mrn"] == "MRN8080"
    assert [(o["id"], o["same_patient"]) for o in row["candidate_orders"]] == [
        (stat.pk, True),
        (other_patient.pk, False),
    ]
    assert row["candidate_orders"][0]["priority"] == PriorityClass.STAT
    # and the facility filter narrows it
    assert client.get(WAITING_URL, {"facility": "WI-LAKEVIEW"}).json()["results"] == []
    # when it matches the study to the STAT order, with a reason
    with django_capture_on_commit_callbacks(execute=True):
        response = _match(client, waiting.pk, order=stat.pk, reason="accession mistyped (O for 0)")
    # then the study has the order, by hand, with its priority and accession
    assert response.status_code == 200, response.content
    assert response.json() == {
        "study": waiting.pk,
        "order": stat.pk,
        "order_match": OrderMatch.MANUAL,
        "accession_number": "A9001",
        "priority": PriorityClass.STAT,
        "is_stroke": False,
    }
    study = Study.objects.get(pk=waiting.pk)
    assert (study.order_id, study.order_match, study.priority) == (stat.pk, "manual", PriorityClass.STAT)
    # and the same history as the page's button: the event with the reason, the audit under the caller
    event = StudyEvent.objects.get(study=study, kind=StudyEventKind.ORDER_MATCHED)
    assert (event.actor, event.detail["reason"]) == (ops_omar, "accession mistyped (O for 0)")
    assert event.detail["before"]["accession"] == "A9O01"
    entry = LogEntry.objects.get_for_object(study).filter(action=LogEntry.Action.UPDATE).latest("timestamp")
    assert entry.actor == ops_omar and entry.changes_dict["order_match"] == ["", "manual"]
    # and routed again as STAT; the study no longer waits
    rerouted = StudyEvent.objects.filter(study=study, kind=StudyEventKind.ROUTED, at__gte=event.at).get()
    assert rerouted.detail["priority"] == PriorityClass.STAT
    assert client.get(WAITING_URL).json()["results"] == []
    # and a second match (another engine a moment later) is a conflict, not a swap
    again = _match(client, waiting.pk, order=other_patient.pk, reason="retry")
    assert again.status_code == 409
    assert "already has its order" in again.json()["detail"]
    assert Study.objects.get(pk=waiting.pk).order_id == stat.pk


def test_every_refusal_is_a_4xx_that_says_why_and_changes_nothing(
    client, ops_omar, chicago, lakeview, waiting
):
    mine, elsewhere, cancelled = (
        order_open(chicago, "A9001"),
        order_open(lakeview, "A9004"),
        order_open(chicago, "A9003", status=OrderStatus.CANCELLED),
    )
    taken = order_open(chicago, "A9002")
    Study.objects.filter(pk=make_study(chicago).pk).update(order=taken)  # it has its images already
    client.force_login(ops_omar)
    for body, status, says in (
        ({"order": elsewhere.pk, "reason": "same MRN"}, 400, "another facility"),
        ({"order": cancelled.pk, "reason": "same MRN"}, 400, "cancelled"),
        ({"order": 987654, "reason": "same MRN"}, 400, "No such order"),
        ({"order": 2**70, "reason": "same MRN"}, 400, "No such order"),
        ({"order": taken.pk, "reason": "same MRN"}, 409, "already has its study"),
        ({"order": mine.pk}, 400, "Invalid request"),
        ({"order": mine.pk, "reason": "   "}, 400, "Invalid request"),
        ({"order": "A9001", "reason": "same MRN"}, 400, "Invalid request"),
    ):
        response = _match(client, waiting.pk, **body)
        assert response.status_code == status, (body, response.content)
        assert says in response.json()["detail"], body
    assert "reason" in _match(client, waiting.pk, order=mine.pk).json()["errors"]
    _unchanged(waiting)
    # an unknown study is 404; a study no longer open is 400
    for study_id in (999999, 2**70):
        missing = _match(client, study_id, order=mine.pk, reason="x")
        assert missing.status_code == 404 and missing.json()["detail"] == "No such study."
    Study.objects.filter(pk=waiting.pk).update(status=StudyStatus.FINAL)
    assert _match(client, waiting.pk, order=mine.pk, reason="x").status_code == 400
    _unchanged(waiting)


@pytest.mark.parametrize("who", ["director_dana", "admin_chicago", "dr_neuro_il"])
def test_only_the_operations_desk_may_list_or_match(request, client, verified_client, chicago, waiting, who):
    user = request.getfixturevalue(who)
    order = order_open(chicago, "A9001")
    if who == "admin_chicago":
        client.force_login(user)
    else:
        verified_client(user)  # a signing role passes its second factor first
    for response in (client.get(WAITING_URL), _match(client, waiting.pk, order=order.pk, reason="x")):
        assert response.status_code == 403, response.content
        assert response.json()["detail"] == "Matching a study to its order is for the operations desk."
    _unchanged(waiting)


def test_anonymous_is_401(client, chicago, waiting):
    order = order_open(chicago, "A9001")
    assert client.get(WAITING_URL).status_code == 401
    assert _match(client, waiting.pk, order=order.pk, reason="x").status_code == 401
    _unchanged(waiting)


def test_documented_in_openapi_schema(client, ops_omar):
    client.force_login(ops_omar)
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    match = schema["paths"]["/api/v1/worklist/{study_id}/order-match/"]["post"]
    assert match["operationId"] == "worklist_order_match"
    assert {"200", "400", "403", "404", "409"} <= set(match["responses"])
    assert {"order", "reason"} <= set(schema["components"]["schemas"]["OrderMatchRequest"]["required"])
    listing = schema["paths"]["/api/v1/worklist/waiting-for-order/"]["get"]
    assert listing["operationId"] == "worklist_waiting_for_order"
    assert "facility" in {p["name"] for p in listing["parameters"]}
    row = schema["components"]["schemas"]["WaitingStudy"]["properties"]
    assert {"id", "facility", "waited_minutes", "candidate_orders"} <= set(row)
    assert row["candidate_orders"]["items"]["$ref"].endswith("/CandidateOrder")
