"""FHIR R4 search and read of Patient, ServiceRequest, ImagingStudy and DiagnosticReport over HTTP
(the test client through every middleware; tokens made by ``manage.py drf_create_token``), every answer
validated with fhir.resources' R4B models: Bundles, paging, facility scoping, search parameters, errors as
OperationOutcome, ``application/fhir+json``, the CapabilityStatement, and the audit of each search."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

import pytest
from auditlog.models import LogEntry
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imaging.models import Order, Patient, Study
from interfaces.fhir.searches import IMAGING_STUDY, PATIENT, SERVICE_REQUEST
from reports.fhir import DIAGNOSTIC_REPORT
from reports.models import Report
from tests.api_records import (
    NPI_OF_WELBY,
    Records,
    apply,
    build_records,
    order_text,
    session_client,
    token_client,
)
from tests.worklist.conftest import make_eligible

pytestmark = pytest.mark.django_db

TYPES = ("Patient", "ServiceRequest", "ImagingStudy", "DiagnosticReport")
MODELS = {"Patient": Patient, "ServiceRequest": Order, "ImagingStudy": Study, "DiagnosticReport": Report}


def bundle_of(response) -> dict:
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("application/fhir+json")
    bundle = response.json()
    Bundle.model_validate(bundle)  # the whole searchset, every entry's resource included
    assert bundle["type"] == "searchset"
    return bundle


def outcome_of(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/fhir+json")
    outcome = response.json()
    OperationOutcome.model_validate(outcome)
    return outcome


def ids_in(bundle: dict) -> list[int]:
    return [int(e["resource"]["id"]) for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def walk(client: Client, url: str) -> list[int]:
    """Every match of a search, following the next links."""
    seen: list[int] = []
    while url:
        bundle = bundle_of(client.get(url))
        seen += ids_in(bundle)
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), "")
    return seen


@pytest.fixture
def records(chicago, lakeview, dr_neuro_il) -> Records:
    make_eligible(dr_neuro_il, chicago)  # reads Lakeshore's studies now
    return build_records(chicago, lakeview, dr_neuro_il)


def a_ids(records: Records, resource_type: str) -> set[int]:
    return {
        "Patient": {records.jane_a.pk, records.peter_a.pk},
        "ServiceRequest": {o.pk for o in records.a_orders},
        "ImagingStudy": {records.stroke_study.pk, records.routine_study.pk},
        "DiagnosticReport": {records.routine_report.pk},
    }[resource_type]


def b_ids(records: Records, resource_type: str) -> set[int]:
    return {
        "Patient": {records.jane_b.pk},
        "ServiceRequest": {o.pk for o in records.b_orders},
        "ImagingStudy": {records.knee_study.pk},
        "DiagnosticReport": {records.knee_report.pk},
    }[resource_type]


# --- Bundles and facility scoping ----------------------------------------------------------------

SEARCHES = [
    "Patient",
    "Patient?identifier=MRN1001",
    "Patient?name=quin&birthdate=1958-02-14",
    "Patient?gender=female",
    "ServiceRequest",
    "ServiceRequest?identifier=P1001",  # the placer number both hospitals use
    "ServiceRequest?patient.identifier=MRN1001&status=active,completed",
    "ImagingStudy",
    "ImagingStudy?started=ge2026-11-01",
    "DiagnosticReport",
    "DiagnosticReport?status=final,amended",
]


@pytest.mark.parametrize("caller", ["token of A", "admin of A", "reader of A"])
def test_facility_b_records_are_never_in_facility_a_bundles(
    caller, records, admin_chicago, dr_neuro_il, verified_client
):
    # given facility A's API token, its admin's session, or a reader eligible only at A
    client = {
        "token of A": lambda: token_client(admin_chicago),
        "admin of A": lambda: session_client(admin_chicago),
        "reader of A": lambda: verified_client(dr_neuro_il),
    }[caller]()
    for query in SEARCHES:
        # when they search, even for B's MRN, name and order numbers, walking every page
        resource_type = query.partition("?")[0]
        found = walk(client, f"/fhir/r4/{query}{'&' if '?' in query else '?'}_count=1")
        # then nothing of B comes back, and what comes back is A's
        assert not set(found) & b_ids(records, resource_type), query
        assert set(found) <= a_ids(records, resource_type), query
        assert found, query
    # and reading B's records one by one is 404, as for a record that does not exist
    for resource_type in TYPES:
        for pk in b_ids(records, resource_type):
            outcome = outcome_of(client.get(f"/fhir/r4/{resource_type}/{pk}"), 404)
            assert outcome["issue"][0]["code"] == "not-found"


def test_a_reader_sees_the_records_of_the_studies_they_may_read(records, dr_neuro_il, verified_client):
    client = verified_client(dr_neuro_il)
    assert set(walk(client, "/fhir/r4/Patient")) == {records.jane_a.pk}  # Peter has no study yet
    assert set(walk(client, "/fhir/r4/ServiceRequest")) == {records.stroke.pk, records.routine.pk}
    assert set(walk(client, "/fhir/r4/ImagingStudy")) == {records.stroke_study.pk, records.routine_study.pk}


def test_operations_search_every_facility_and_totals_count_every_match(records, ops_omar):
    client = token_client(ops_omar)
    for resource_type in TYPES:
        bundle = bundle_of(client.get(f"/fhir/r4/{resource_type}"))
        expected = a_ids(records, resource_type) | b_ids(records, resource_type)
        assert set(ids_in(bundle)) == expected and bundle["total"] == len(expected)
        for entry in bundle["entry"]:
            assert entry["fullUrl"] == f"http://testserver/fhir/r4/{resource_type}/{entry['resource']['id']}"


def test_credentialing_staff_are_refused_and_anonymous_asked_to_authenticate(records, mso_mary, client):
    outcome = outcome_of(client.get("/fhir/r4/Patient"), 401)
    assert outcome["issue"][0]["code"] == "login"
    assert client.get("/fhir/r4/Patient")["WWW-Authenticate"] == "Token"
    for resource_type in TYPES:
        outcome = outcome_of(token_client(mso_mary).get(f"/fhir/r4/{resource_type}"), 403)
        assert outcome["issue"][0]["code"] == "forbidden"
    assert not LogEntry.objects.filter(action=LogEntry.Action.ACCESS).exists()


def test_a_radiologist_without_a_verified_second_factor_gets_an_operation_outcome(records, dr_neuro_il):
    outcome = outcome_of(session_client(dr_neuro_il).get("/fhir/r4/Patient"), 403)
    assert "second factor" in outcome["issue"][0]["diagnostics"]


# --- paging --------------------------------------------------------------------------------------


def test_paging_walks_every_match_exactly_once_and_back(records, ops_omar):
    client = token_client(ops_omar)
    everything = a_ids(records, "ServiceRequest") | b_ids(records, "ServiceRequest")
    # given pages of two, newest first
    first = bundle_of(client.get("/fhir/r4/ServiceRequest?_count=2"))
    assert first["total"] == len(everything) and len(first["entry"]) == 2
    assert {link["relation"] for link in first["link"]} == {"self", "first", "next"}
    # when a new order arrives in the middle of the walk
    second_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    late = apply(records.stroke.facility, order_text(accession="A9999", placer="P9999", filler="F9999"))
    forward = ids_in(first) + walk(client, second_url)
    # then every match before it is seen exactly once, in descending id order, and the newcomer is not
    assert sorted(forward, reverse=True) == forward and len(forward) == len(set(forward))
    assert set(forward) == everything and late.pk not in forward
    # and the previous links lead back over the same pages
    last = bundle_of(client.get(second_url))
    while any(link["relation"] == "next" for link in last["link"]):
        last = bundle_of(client.get(next(link["url"] for link in last["link"] if link["relation"] == "next")))
    backward = ids_in(last)
    page = last
    while previous := next((link["url"] for link in page["link"] if link["relation"] == "previous"), None):
        page = bundle_of(client.get(previous))
        backward = ids_in(page) + backward
    assert backward == [late.pk, *forward]  # from the newest, now that the newcomer is there


def test_count_zero_gives_the_total_alone(records, ops_omar):
    bundle = bundle_of(token_client(ops_omar).get("/fhir/r4/Patient?_count=0"))
    assert bundle["total"] == 3 and not bundle.get("entry")
    assert bundle_of(token_client(ops_omar).get("/fhir/r4/Patient?_summary=count"))["total"] == 3


# --- search parameters ---------------------------------------------------------------------------


def _found(client, query: str) -> set[int]:
    return set(ids_in(bundle_of(client.get(f"/fhir/r4/{query}"))))


def test_token_search_by_system_and_value(records, ops_omar):
    client = token_client(ops_omar)
    jane_a, jane_b, peter = records.jane_a.pk, records.jane_b.pk, records.peter_a.pk
    # MRN: value alone, the minted system, the authority as PID-3.4 names it, an OID authority
    assert _found(client, "Patient?identifier=MRN1001") == {jane_a, jane_b}
    assert _found(client, "Patient?identifier=urn:readroom:facility:CHI-L1:patient-id:LAKESHORE|MRN1001") == {
        jane_a
    }
    assert _found(client, "Patient?identifier=LAKEVIEW|MRN1001") == {jane_b}
    assert _found(client, "Patient?identifier=urn:oid:2.16.840.1.113883.3.72|MRN2002") == {peter}
    assert _found(client, "Patient?identifier=urn:oid:2.16.840.1.113883.3.72|") == {peter}
    assert _found(client, "Patient?identifier=|MRN1001") == set()  # no MRN here is without a system
    # accession, placer, filler; and the chain to the patient's MRN
    stroke = records.stroke.pk
    assert _found(client, "ServiceRequest?identifier=urn:readroom:facility:CHI-L1:accession|A1001") == {
        stroke
    }
    assert _found(client, "ServiceRequest?identifier=urn:readroom:facility:CHI-L1:placer|P1001") == {stroke}
    assert _found(client, "ServiceRequest?identifier=A1001") == {stroke}
    assert _found(client, "ServiceRequest?identifier=urn:readroom:facility:CHI-L1:accession|P1001") == set()
    chained = _found(client, "ServiceRequest?patient.identifier=LAKESHORE|MRN1001")
    assert chained == {records.stroke.pk, records.routine.pk, records.cancelled.pk}
    # the Study Instance UID as DICOM writes it, and the accession on ImagingStudy and DiagnosticReport
    uid = records.stroke_study.study_instance_uid
    assert _found(client, f"ImagingStudy?identifier=urn:dicom:uid|urn:oid:{uid}") == {records.stroke_study.pk}
    assert _found(client, f"ImagingStudy?identifier={uid}") == {records.stroke_study.pk}
    assert _found(client, "ImagingStudy?identifier=B1001") == {records.knee_study.pk}
    assert _found(client, "DiagnosticReport?identifier=A1002") == {records.routine_report.pk}


def test_reference_and_string_parameters(records, ops_omar):
    client = token_client(ops_omar)
    jane = records.jane_a.pk
    for form in (f"{jane}", f"Patient/{jane}", f"http://testserver/fhir/r4/Patient/{jane}"):
        assert _found(client, f"ServiceRequest?patient={form}") == {o.pk for o in records.a_orders[:3]}
    assert _found(client, f"ImagingStudy?subject:Patient={jane}") == {
        records.stroke_study.pk,
        records.routine_study.pk,
    }
    assert _found(client, f"DiagnosticReport?patient={jane}") == {records.routine_report.pk}
    assert _found(client, "Patient?name=NOV") == {records.peter_a.pk}
    assert _found(client, "Patient?name:contains=ova") == {records.peter_a.pk}
    assert _found(client, "Patient?name:exact=novak") == set()  # exact is case-sensitive
    assert _found(client, "Patient?family=quinlan&given=jane") == {jane, records.jane_b.pk}
    assert _found(client, "Patient?gender=male") == {records.peter_a.pk}
    assert _found(client, "Patient?_id=" + f"{jane},{records.peter_a.pk}") == {jane, records.peter_a.pk}


def test_date_prefixes_over_local_days_and_instants(records, ops_omar):
    client = token_client(ops_omar)
    stroke, routine = (
        records.stroke_study.pk,
        records.routine_study.pk,
    )  # 28 Nov 03:30 and 27 Nov 23:30 Chicago
    knee = records.knee_study.pk  # 28 Nov 10:00 UTC = 04:00 Chicago
    # a day without a zone is the facility's day: 23:30 on the 27th in Chicago is the 28th in UTC
    assert _found(client, "ImagingStudy?started=2026-11-27") == {routine}
    assert _found(client, "ImagingStudy?started=eq2026-11-28") == {stroke, knee}
    assert _found(client, "ImagingStudy?started=2026-11") == {stroke, routine, knee}
    assert _found(client, "ImagingStudy?started=ne2026-11-27") == {stroke, knee}
    assert _found(client, "ImagingStudy?started=gt2026-11-27") == {stroke, knee}
    assert _found(client, "ImagingStudy?started=sa2026-11-27") == {stroke, knee}
    assert _found(client, "ImagingStudy?started=lt2026-11-28") == {routine}
    assert _found(client, "ImagingStudy?started=eb2026-11-28") == {routine}
    assert _found(client, "ImagingStudy?started=ge2026-11-28&started=le2026-11-28") == {stroke, knee}
    # with a zone it is an instant; an unencoded + (a space) is read as +
    assert _found(client, "ImagingStudy?started=ge2026-11-28T05:00:00Z&started=lt2026-11-28T09:30:00Z") == {
        routine
    }
    assert _found(client, "ImagingStudy?started=ge2026-11-28T04:00:00-06:00") == {knee}
    assert _found(client, "ImagingStudy?started=lt2026-11-28T10:00:00 00:00") == {stroke, routine}
    # authored (ORC-9, Chicago wall clock), birthdate (a date)
    assert _found(client, "ServiceRequest?authored=2026-11-27") == {records.routine.pk}
    assert _found(client, "Patient?birthdate=1970") == {records.peter_a.pk}
    assert _found(client, "Patient?birthdate=lt1970-06-01") == {records.jane_a.pk, records.jane_b.pk}
    assert _found(client, "Patient?birthdate=ge1970-06-01T12:00") == {records.peter_a.pk}


def test_a_report_is_found_by_the_date_of_its_exam(records, ops_omar):
    # the routine report's exam: 27 Nov 23:30 Chicago (05:30 UTC on the 28th); the knee's: 28 Nov 10:00 UTC
    client = token_client(ops_omar)
    routine, knee = records.routine_report.pk, records.knee_report.pk
    assert _found(client, "DiagnosticReport?date=2026-11-27") == {routine}  # the facility's day
    assert _found(client, "DiagnosticReport?date=2026-11-28") == {knee}
    assert _found(client, "DiagnosticReport?date=2026-11") == {routine, knee}
    assert _found(client, "DiagnosticReport?date=gt2026-11-27") == {knee}
    assert _found(client, "DiagnosticReport?date=ge2026-11-28T05:00:00Z&date=lt2026-11-28T09:30:00Z") == {
        routine
    }
    assert _found(client, f"DiagnosticReport?date=2026-11-27&patient={records.jane_a.pk}") == {routine}


@pytest.mark.parametrize(
    ("definition", "codes"),
    [
        (SERVICE_REQUEST, ("active", "revoked", "completed")),
        (IMAGING_STUDY, ("registered", "available", "cancelled")),
        (DIAGNOSTIC_REPORT, ("preliminary", "final", "amended")),
    ],
)
def test_status_search_agrees_with_the_status_each_resource_shows(definition, codes, records, ops_omar):
    client = token_client(ops_omar)
    shown = {}
    for entry in bundle_of(client.get(f"/fhir/r4/{definition.type}"))["entry"]:
        shown[int(entry["resource"]["id"])] = entry["resource"]["status"]
    for code in codes:
        assert _found(client, f"{definition.type}?status={code}") == {
            k for k, v in shown.items() if v == code
        }
    assert set(shown.values()) <= set(codes)


# --- the mapping ---------------------------------------------------------------------------------


def test_service_request_mapping(records, ops_omar):
    client = token_client(ops_omar)
    stroke = client.get(f"/fhir/r4/ServiceRequest/{records.stroke.pk}").json()
    assert stroke["status"] == "active" and stroke["intent"] == "order" and stroke["priority"] == "stat"
    assert stroke["subject"]["reference"] == f"Patient/{records.jane_a.pk}"
    assert stroke["requester"]["display"] == "DR MARCUS WELBY"
    assert stroke["requester"]["identifier"]["system"] == "http://hl7.org/fhir/sid/us-npi"
    assert stroke["requester"]["identifier"]["value"] == NPI_OF_WELBY
    assert stroke["reasonCode"] == [{"text": "CODE STROKE LKW 0200"}]
    assert stroke["authoredOn"] == "2026-11-28T09:10:00Z"  # 03:10 Chicago
    identifiers = {i["type"]["coding"][0]["code"]: i for i in stroke["identifier"]}
    assert identifiers["ACSN"] == {
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
        "system": "urn:readroom:facility:CHI-L1:accession",
        "value": "A1001",
        "assigner": {"display": "Lakeshore Medical Center"},
    }
    assert identifiers["PLAC"]["value"] == "P1001" and identifiers["FILL"]["value"] == "F1001"
    routine = client.get(f"/fhir/r4/ServiceRequest/{records.routine.pk}").json()
    assert routine["status"] == "completed" and routine["priority"] == "routine"  # its read is final
    assert routine["requester"]["identifier"] == {"value": "1234567"}  # no authority: not called an NPI
    assert client.get(f"/fhir/r4/ServiceRequest/{records.cancelled.pk}").json()["status"] == "revoked"
    assert client.get(f"/fhir/r4/ServiceRequest/{records.asap.pk}").json()["priority"] == "asap"


def test_patient_mapping(records, ops_omar):
    client = token_client(ops_omar)
    jane = client.get(f"/fhir/r4/Patient/{records.jane_a.pk}").json()
    assert jane["gender"] == "female" and jane["birthDate"] == "1958-02-14" and jane["active"] is True
    assert jane["name"] == [{"use": "official", "family": "QUINLAN", "given": ["JANE"]}]
    assert jane["identifier"][0]["system"] == "urn:readroom:facility:CHI-L1:patient-id:LAKESHORE"
    assert jane["identifier"][0]["value"] == "MRN1001"
    peter = client.get(f"/fhir/r4/Patient/{records.peter_a.pk}").json()
    assert peter["gender"] == "male" and peter["identifier"][0]["system"] == "urn:oid:2.16.840.1.113883.3.72"
    # an ADT^A40 merge: the prior record is inactive and replaced by the surviving one
    prior = Patient.objects.create(
        facility=records.jane_a.facility, mrn="MRN0999", assigning_authority="LAKESHORE"
    )
    prior.merged_into = records.jane_a
    prior.save()
    merged = client.get(f"/fhir/r4/Patient/{prior.pk}").json()
    assert merged["active"] is False
    assert merged["link"] == [{"other": {"reference": f"Patient/{records.jane_a.pk}"}, "type": "replaced-by"}]
    surviving = client.get(f"/fhir/r4/Patient/{records.jane_a.pk}").json()
    assert surviving["link"] == [{"other": {"reference": f"Patient/{prior.pk}"}, "type": "replaces"}]


def test_imaging_study_and_report_point_to_the_patient_and_the_order(records, ops_omar):
    client = token_client(ops_omar)
    study = client.get(f"/fhir/r4/ImagingStudy/{records.routine_study.pk}").json()
    assert study["subject"]["reference"] == f"Patient/{records.jane_a.pk}"
    assert study["basedOn"][0]["reference"] == f"ServiceRequest/{records.routine.pk}"
    bundle = bundle_of(client.get("/fhir/r4/DiagnosticReport?identifier=A1002"))
    (report,) = [e["resource"] for e in bundle["entry"]]
    assert report["subject"]["reference"] == f"Patient/{records.jane_a.pk}"
    assert report["basedOn"][0]["reference"] == f"ServiceRequest/{records.routine.pk}"
    assert report["status"] == "amended"
    # search results carry the text, not the PDF, and say so
    assert [f["contentType"] for f in report["presentedForm"]] == ["text/plain; charset=utf-8"]
    assert report["meta"]["tag"][0]["code"] == "SUBSETTED"


# --- formats, errors, lenient/strict -------------------------------------------------------------


def test_fhir_json_is_accepted(records, ops_omar):
    client = token_client(ops_omar)
    for accept in (
        "application/fhir+json",
        "application/fhir+json; fhirVersion=4.0",
        "application/json",
        "*/*",
        None,
    ):
        headers = {"HTTP_ACCEPT": accept} if accept else {}
        for url in ("/fhir/r4/metadata", f"/fhir/r4/Patient/{records.jane_a.pk}", "/fhir/r4/ServiceRequest"):
            response = client.get(url, **headers)
            assert response.status_code == 200, (accept, url)
            assert response["Content-Type"] == "application/fhir+json; charset=utf-8"
    assert client.get("/fhir/r4/Patient?_format=json", HTTP_ACCEPT="text/html").status_code == 200
    assert client.get("/fhir/r4/Patient?_format=application/fhir+json").status_code == 200  # + unencoded
    assert client.get("/fhir/r4/Patient?_format=application/fhir%2Bjson").status_code == 200


@pytest.mark.parametrize(
    ("method", "url", "headers", "status", "code"),
    [
        ("get", "/fhir/r4/Patient?birthdate=1958-13-01", {}, 400, "invalid"),
        ("get", "/fhir/r4/Patient?birthdate=ap1958", {}, 400, "not-supported"),
        ("get", "/fhir/r4/Patient?birthdate=yesterday", {}, 400, "invalid"),
        ("get", "/fhir/r4/Patient?_count=-1", {}, 400, "invalid"),
        ("get", "/fhir/r4/Patient?_count=ten", {}, 400, "invalid"),
        ("get", "/fhir/r4/Patient?_cursor=after.x", {}, 400, "invalid"),
        ("get", "/fhir/r4/Patient?_total=some", {}, 400, "invalid"),
        ("get", "/fhir/r4/Patient?name:missing=true", {}, 400, "not-supported"),
        ("get", "/fhir/r4/Patient?identifier:of-type=x", {}, 400, "not-supported"),
        ("get", "/fhir/r4/ServiceRequest?patient=Group/1", {}, 400, "invalid"),
        ("get", "/fhir/r4/ServiceRequest?patient=a%20b", {}, 400, "invalid"),
        ("get", "/fhir/r4/Patient?_id=%24%24", {}, 400, "invalid"),
        ("get", "/fhir/r4/Patient?name=%00", {}, 400, "invalid"),
        ("get", "/fhir/r4/Patient?nickname=jj", {"HTTP_PREFER": "handling=strict"}, 400, "not-supported"),
        (
            "get",
            "/fhir/r4/Patient?_sort=name",
            {"HTTP_PREFER": "return=minimal, handling=strict"},
            400,
            "not-supported",
        ),
        ("get", "/fhir/r4/Observation", {}, 404, "not-supported"),
        ("get", "/fhir/r4/Patient/abc", {}, 404, "not-found"),
        ("get", "/fhir/r4/Patient/999999", {}, 404, "not-found"),
        ("get", "/fhir/r4/", {}, 404, "not-supported"),
        ("get", "/fhir/r4/Patient?_format=xml", {}, 406, "not-supported"),
        ("get", "/fhir/r4/Patient", {"HTTP_ACCEPT": "application/fhir+xml"}, 406, "not-supported"),
        (
            "get",
            "/fhir/r4/Patient",
            {"HTTP_ACCEPT": "application/fhir+json; fhirVersion=3.0"},
            406,
            "not-supported",
        ),
        ("get", "/fhir/r4/metadata", {"HTTP_ACCEPT": "text/html"}, 406, "not-supported"),
        ("put", "/fhir/r4/Patient/1", {}, 405, "not-supported"),
        ("delete", "/fhir/r4/ServiceRequest/1", {}, 405, "not-supported"),
        (
            "post",
            "/fhir/r4/Patient",
            {"content_type": "application/x-www-form-urlencoded"},
            405,
            "not-supported",
        ),
        (
            "post",
            "/fhir/r4/Patient/_search",
            {"content_type": "application/json", "data": "{}"},
            415,
            "not-supported",
        ),
    ],
)
def test_bad_requests_get_an_operation_outcome(method, url, headers, status, code, ops_omar):
    response = getattr(token_client(ops_omar), method)(url, **headers)
    outcome = outcome_of(response, status)
    assert outcome["issue"][0]["code"] == code and outcome["issue"][0]["diagnostics"]


def test_unknown_parameters_are_ignored_and_named_by_default(records, ops_omar):
    bundle = bundle_of(token_client(ops_omar).get("/fhir/r4/Patient?nickname=jj&name=novak&_sort=name"))
    assert ids_in(bundle) == [records.peter_a.pk]
    (outcome,) = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert {i["location"][0] for i in outcome["resource"]["issue"]} == {"http.nickname", "http._sort"}
    self_link = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    assert urlsplit(self_link).query == "name=novak&_count=50"  # only what was applied


def test_a_search_can_be_posted_as_a_form(records, ops_omar):
    client = token_client(ops_omar)
    response = client.post(
        "/fhir/r4/Patient/_search?gender=female",
        "name=quin&birthdate=1958-02-14",
        content_type="application/x-www-form-urlencoded",
    )
    assert set(ids_in(bundle_of(response))) == {records.jane_a.pk, records.jane_b.pk}


# --- /metadata -----------------------------------------------------------------------------------


def test_the_capability_statement_validates_and_states_what_is_served(client):
    # anonymous: clients discover a server before they authenticate
    response = client.get("/fhir/r4/metadata", HTTP_ACCEPT="application/fhir+json")
    assert response.status_code == 200
    statement = response.json()
    CapabilityStatement.model_validate(statement)
    assert statement["fhirVersion"] == "4.0.1" and statement["kind"] == "instance"
    assert "application/fhir+json" in statement["format"]
    (rest,) = statement["rest"]
    served = {r["type"]: r for r in rest["resource"]}
    assert list(served) == list(TYPES)
    for definition in (PATIENT, SERVICE_REQUEST, IMAGING_STUDY, DIAGNOSTIC_REPORT):
        resource = served[definition.type]
        assert {i["code"] for i in resource["interaction"]} == {"read", "search-type"}
        names = {p["name"] for p in resource["searchParam"]}
        assert names == {p.name for p in definition.parameters if "." not in p.name}
    for name in ("identifier", "name", "birthdate"):
        assert name in {p["name"] for p in served["Patient"]["searchParam"]}
    for name in ("identifier", "patient", "status", "authored"):
        assert name in {p["name"] for p in served["ServiceRequest"]["searchParam"]}
    for name in ("identifier", "patient", "started"):
        assert name in {p["name"] for p in served["ImagingStudy"]["searchParam"]}
    for name in ("identifier", "patient", "status", "date"):
        assert name in {p["name"] for p in served["DiagnosticReport"]["searchParam"]}


# --- audit ---------------------------------------------------------------------------------------


def test_a_search_is_audited_with_who_what_and_how_many(records, admin_chicago):
    client = token_client(admin_chicago)
    bundle = bundle_of(client.get("/fhir/r4/Patient?name=quin&birthdate=1958-02-14", REMOTE_ADDR="10.1.2.3"))
    assert ids_in(bundle) == [records.jane_a.pk]
    search = LogEntry.objects.get(action=LogEntry.Action.ACCESS, object_pk="")
    assert search.actor == admin_chicago and search.remote_addr == "10.1.2.3"
    assert search.content_type.model == "patient"
    assert search.additional_data["search"] == {
        "via": "FHIR",
        "query": {"name": ["quin"], "birthdate": ["1958-02-14"]},
        "returned": 1,
        "total": 1,
    }
    # the text the audit page lists names the parameters, not the values searched for
    assert "quin" not in search.object_repr and "1958" not in search.object_repr
    assert "birthdate, name" in search.object_repr
    # and each record returned is a read of that patient's data
    read = LogEntry.objects.get_for_object(records.jane_a).filter(action=LogEntry.Action.ACCESS).get()
    assert read.actor == admin_chicago and read.additional_data["patient_id"] == records.jane_a.pk


@pytest.mark.parametrize("resource_type", TYPES)
def test_a_page_costs_the_same_reads_whatever_its_size(resource_type, records, ops_omar):
    # given more records than one page of one shows
    client = token_client(ops_omar)

    def reads(count: int) -> int:
        with CaptureQueriesContext(connection) as queries:
            bundle_of(client.get(f"/fhir/r4/{resource_type}?_count={count}"))
        # the audit rows are one INSERT per record returned, by design; reads must not grow
        return sum(1 for q in queries.captured_queries if not q["sql"].lstrip().upper().startswith("INSERT"))

    # then a page of one and a page of everything take the same number of queries (no N+1)
    assert reads(1) == reads(50)


_NAMES = sorted(
    {p.name for d in (PATIENT, SERVICE_REQUEST, IMAGING_STUDY, DIAGNOSTIC_REPORT) for p in d.parameters}
)
_KEYS = st.one_of(
    st.sampled_from([*_NAMES, "_count", "_cursor", "_total", "_summary", "_sort", "_format"]),
    st.builds(
        lambda n, m: f"{n}:{m}",
        st.sampled_from(_NAMES),
        st.sampled_from(["exact", "contains", "Patient", "x"]),
    ),
    st.text(max_size=8),
)
_VALUES = st.one_of(
    st.text(max_size=24),
    st.from_regex(
        r"(eq|ne|gt|lt|ge|le|sa|eb|ap)?\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2})?(Z|[+-]\d{2}:\d{2})?)?)?)?",
        fullmatch=True,
    ),
    st.from_regex(r"[a-z:./]{0,12}\|[A-Za-z0-9.]{0,10}", fullmatch=True),
    st.from_regex(r"(Patient/)?-?\d{1,22}", fullmatch=True),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(resource_type=st.sampled_from(TYPES), query=st.lists(st.tuples(_KEYS, _VALUES), max_size=3))
def test_any_query_answers_a_bundle_or_an_operation_outcome_never_a_500(
    resource_type, query, records, ops_omar
):
    client = token_client(ops_omar)
    response = client.get(f"/fhir/r4/{resource_type}?{urlencode(query)}")
    assert response.status_code in (200, 400, 406), (query, response.content)
    if response.status_code == 200:
        bundle_of(response)
    else:
        outcome_of(response, response.status_code)
