"""REST ``/api/v1/orders/`` and ``/api/v1/studies/`` over HTTP: the filters a hospital's interface
analyst uses (accession, MRN + issuer, facility, status, date), pagination, who is refused, and the
audit of every list and detail (tokens made by ``manage.py drf_create_token``)."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry
from django.utils import timezone

from imaging.facts import InstanceHeader
from imaging.services import _study_for
from tests import hl7_data
from tests.api_records import Records, apply, build_records, session_client, study_for, token_client
from tests.interfaces.test_order_updates import NW as STROKE_NW
from tests.interfaces.test_order_updates import STROKE_HISTORY
from tests.worklist.conftest import make_eligible

pytestmark = pytest.mark.django_db


@pytest.fixture
def records(chicago, lakeview, dr_neuro_il) -> Records:
    make_eligible(dr_neuro_il, chicago)
    return build_records(chicago, lakeview, dr_neuro_il)


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_orders_filtered_by_accession_mrn_issuer_facility_status_and_date(records, ops_omar):
    api = token_client(ops_omar)
    jane_a = {records.stroke.pk, records.routine.pk, records.cancelled.pk}
    assert ids(api.get("/api/v1/orders/?accession=A1001")) == [records.stroke.pk]
    assert set(ids(api.get("/api/v1/orders/?mrn=MRN1001"))) == jane_a | {o.pk for o in records.b_orders}
    assert set(ids(api.get("/api/v1/orders/?mrn=MRN1001&issuer=LAKESHORE"))) == jane_a
    assert set(ids(api.get("/api/v1/orders/?facility=WI-LAKEVIEW"))) == {o.pk for o in records.b_orders}
    assert ids(api.get("/api/v1/orders/?status=cancelled")) == [records.cancelled.pk]
    # several statuses: every order of A (they came with ORC-5 SC, and one was cancelled since)
    assert set(ids(api.get("/api/v1/orders/?status=cancelled,scheduled&facility=CHI-L1"))) == {
        o.pk for o in records.a_orders
    }
    assert ids(api.get("/api/v1/orders/?status=in_progress")) == []
    # the order time (ORC-9) in the facility's day: 22:00 on 27 Nov in Chicago is 04:00 UTC on the 28th
    assert ids(api.get("/api/v1/orders/?date=2026-11-27")) == [records.routine.pk]
    assert records.routine.pk not in ids(api.get("/api/v1/orders/?date_from=2026-11-28"))
    assert set(ids(api.get("/api/v1/orders/?date_from=2026-11-27&date_to=2026-11-28"))) == {
        o.pk for o in records.a_orders + records.b_orders
    }
    assert ids(api.get("/api/v1/orders/?date_to=2026-11-26")) == []


def test_an_order_row_says_what_the_hospital_sent(records, admin_chicago):
    (row,) = token_client(admin_chicago).get("/api/v1/orders/?accession=A1001").json()["results"]
    assert row["facility"] == "CHI-L1" and row["status"] == "scheduled" and row["priority"] == "STROKE"
    assert row["placer_order_number"] == "P1001" and row["filler_order_number"] == "F1001"
    assert row["procedure"] == {"code": "70450", "text": "CT HEAD W/O CONTRAST", "coding_system": "C4"}
    assert row["reason"] == "CODE STROKE LKW 0200"
    assert row["ordering_provider"]["xcn"]["authority"] == "NPI"
    assert row["patient"] == {
        "id": records.jane_a.pk,
        "mrn": "MRN1001",
        "issuer": "LAKESHORE",
        "family_name": "QUINLAN",
        "given_name": "JANE",
        "middle_name": "",
        "birth_date": "1958-02-14",
        "sex": "F",
    }
    assert row["studies"] == [records.stroke_study.pk]
    assert row["ordered_at"] == "2026-11-28T09:10:00Z"


def test_studies_filtered_and_paginated(records, ops_omar):
    api = token_client(ops_omar)
    assert ids(api.get("/api/v1/studies/?accession=B1001")) == [records.knee_study.pk]
    assert set(ids(api.get("/api/v1/studies/?mrn=MRN1001&issuer=LAKESHORE"))) == {
        records.stroke_study.pk,
        records.routine_study.pk,
    }
    assert ids(api.get("/api/v1/studies/?status=complete")) == [records.stroke_study.pk]
    assert set(ids(api.get("/api/v1/studies/?status=final&facility=CHI-L1"))) == {records.routine_study.pk}
    # the study time in the facility's day (23:30 on 27 Nov in Chicago)
    assert ids(api.get("/api/v1/studies/?date=2026-11-27")) == [records.routine_study.pk]
    # newest first, limit/offset like the rest of the API
    first = api.get("/api/v1/studies/?limit=2").json()
    assert first["count"] == 3 and len(first["results"]) == 2 and first["next"]
    second = api.get(first["next"].removeprefix("http://testserver")).json()
    assert [r["id"] for r in first["results"] + second["results"]] == sorted(
        [records.stroke_study.pk, records.routine_study.pk, records.knee_study.pk], reverse=True
    )
    detail = api.get(f"/api/v1/studies/{records.stroke_study.pk}/").json()
    assert detail["study_instance_uid"] == records.stroke_study.study_instance_uid
    assert detail["order"] == records.stroke.pk and detail["modalities"] == ["CT"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=lost", "status"),
        ("status=,", "status"),
        ("date=2026-02-30", "date"),
        ("date_from=yesterday", "date_from"),
        ("date_from=2026-11-28&date_to=2026-11-01", "date_to"),
        ("date=2026-11-28&date_to=2026-11-29", "date"),
        ("mrn=%00", "mrn"),  # PostgreSQL cannot take a NUL in a query
    ],
)
def test_a_malformed_filter_is_a_400_that_names_it(query, field, ops_omar):
    for path in ("/api/v1/orders/", "/api/v1/studies/"):
        response = token_client(ops_omar).get(f"{path}?{query}")
        # the body names the field (a DRF error keyed by it, or the query guard's sentence)
        assert response.status_code == 400 and field in response.content.decode(), response.content


def test_each_caller_sees_what_they_may_and_nothing_of_another_facility(
    records, admin_chicago, admin_lakeview, dr_neuro_il, verified_client
):
    a_orders = {o.pk for o in records.a_orders}
    # facility A's token and A's admin: all of A's orders, whatever the filter asks for
    for api in (token_client(admin_chicago), session_client(admin_chicago)):
        assert set(ids(api.get("/api/v1/orders/"))) == a_orders
        assert set(ids(api.get("/api/v1/orders/?mrn=MRN1001"))) == a_orders - {records.asap.pk}
        assert ids(api.get("/api/v1/orders/?facility=WI-LAKEVIEW")) == []
        assert ids(api.get("/api/v1/studies/?accession=B1001")) == []
        assert api.get(f"/api/v1/orders/{records.knee_b.pk}/").status_code == 404
        assert api.get(f"/api/v1/studies/{records.knee_study.pk}/").status_code == 404
    # B's admin: B only
    lakeview = token_client(admin_lakeview)
    assert set(ids(lakeview.get("/api/v1/orders/"))) == {o.pk for o in records.b_orders}
    assert lakeview.get(f"/api/v1/orders/{records.stroke.pk}/").status_code == 404
    # a reader eligible at A: the studies they may read and those studies' orders
    reader = verified_client(dr_neuro_il)
    assert set(ids(reader.get("/api/v1/studies/"))) == {records.stroke_study.pk, records.routine_study.pk}
    assert set(ids(reader.get("/api/v1/orders/"))) == {records.stroke.pk, records.routine.pk}
    assert reader.get(f"/api/v1/orders/{records.asap.pk}/").status_code == 404  # no images: not theirs
    assert reader.get(f"/api/v1/orders/{records.stroke.pk}/").status_code == 200


def test_credentialing_staff_get_403_and_anonymous_401(records, mso_mary, client):
    for path in ("/api/v1/orders/", "/api/v1/studies/", f"/api/v1/orders/{records.stroke.pk}/"):
        response = client.get(path)
        assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"
        for mso in (token_client(mso_mary), session_client(mso_mary)):
            response = mso.get(path)
            assert response.status_code == 403 and "patient data" in response.json()["detail"]
    assert not LogEntry.objects.filter(action=LogEntry.Action.ACCESS).exists()


def test_lists_are_audited_as_searches_and_details_as_reads(records, admin_chicago):
    api = token_client(admin_chicago)
    assert ids(api.get("/api/v1/orders/?mrn=MRN2002&issuer=2.16.840.1.113883.3.72")) == [records.asap.pk]
    search = LogEntry.objects.get(action=LogEntry.Action.ACCESS, object_pk="")
    assert search.actor == admin_chicago and search.content_type.model == "order"
    assert search.additional_data["search"] == {
        "via": "REST",
        "query": {"mrn": ["MRN2002"], "issuer": ["2.16.840.1.113883.3.72"]},
        "returned": 1,
        "total": 1,
    }
    assert "MRN2002" not in search.object_repr
    read = LogEntry.objects.get_for_object(records.asap).filter(action=LogEntry.Action.ACCESS).get()
    assert read.actor == admin_chicago and read.additional_data["patient_id"] == records.peter_a.pk
    api.get(f"/api/v1/studies/{records.stroke_study.pk}/")
    read = LogEntry.objects.get_for_object(records.stroke_study).filter(action=LogEntry.Action.ACCESS).get()
    assert read.actor == admin_chicago


def test_an_order_row_is_the_whole_order_and_a_study_row_says_how_it_matched(chicago, ops_omar):
    # given a code stroke ordered with two OBR-31, OBR-13, an NTE and its visit (ORM), and a CT
    # ordered by OMI with the IPC's ids and Study UID, whose images came with that UID only
    stroke = apply(chicago, STROKE_NW)
    omi = apply(chicago, hl7_data.omi(accession="A4244", study_uid="1.2.826.0.1.3680043.8.498.4244"))
    header = InstanceHeader(
        sop_instance_uid="1.2.3.4244.1.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        study_instance_uid="1.2.826.0.1.3680043.8.498.4244",
        series_instance_uid="1.2.3.4244.1",
    )
    by_uid, _ = _study_for(chicago, header, timezone.now())
    orderless = study_for(chicago, "X9", "1.2.826.0.1.3680043.10.509.1", started=timezone.now())
    api = token_client(ops_omar)
    # then the order row carries everything the hospital sent
    (row,) = api.get("/api/v1/orders/", {"accession": "A4242"}).json()["results"]
    assert row["reasons_for_study"] == [
        {"code": "I63.9", "text": "Cerebral infarction, unspecified", "system": "I10"},
        {"code": "R47.01", "text": "Aphasia", "system": "I10"},
    ]
    assert row["clinical_information"] == STROKE_HISTORY
    assert row["notes"] == ["Patient is on apixaban, last dose 21:00"]
    assert row["clinical_history"] == stroke.clinical_history and "apixaban" in row["clinical_history"]
    assert (row["placer_order_issuer"], row["filler_order_issuer"], row["priority_code"]) == (
        "RIS_ACME",
        "PACS_ACME",
        "S",
    )
    assert row["visit"] == {
        "patient_class": "E",
        "location": stroke.patient_location,
        "number": "V-99812",
        "number_authority": "LAKESHORE",
    }
    assert row["visit"]["location"].startswith("ED^BAY4")
    assert row["ordering_provider"]["xcn"]["degree"] == "MD"
    ipc = api.get(f"/api/v1/orders/{omi.pk}/").json()
    assert (ipc["requested_procedure_id"], ipc["scheduled_procedure_step_id"], ipc["modality"]) == (
        "RPA4244",
        "SPSA4244",
        "CT",
    )
    assert ipc["study_instance_uid"] == "1.2.826.0.1.3680043.8.498.4244" and ipc["studies"] == [by_uid.pk]
    # and a study row says how it found its order, and the list filters by it
    study = api.get(f"/api/v1/studies/{by_uid.pk}/").json()
    assert (study["order"], study["order_match"]) == (omi.pk, "study_uid")
    assert ids(api.get("/api/v1/studies/", {"order_match": "study_uid"})) == [by_uid.pk]
    assert ids(api.get("/api/v1/studies/", {"order_match": "none"})) == [orderless.pk]
    refused = api.get("/api/v1/studies/", {"order_match": "guess"})
    assert refused.status_code == 400 and "order_match" in refused.json()
