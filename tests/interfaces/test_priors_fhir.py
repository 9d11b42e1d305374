"""A FHIR DiagnosticReport source of prior reports (docs/priors.md, "FHIR DiagnosticReport sources"),
against a real FHIR server: ReadRoom's own FHIR R4 API in a uvicorn process of its own, on a database
of its own, as the hospital's EHR (tests/interfaces/fhir_hospital.py says why no third-party server).

When priors are fetched for the patient, the source is asked by MRN and issuer; the patient's
reports (final, amended, preliminary) are stored read-only and encrypted and shown beside the editor
with their source; the namesake's and the same MRN under another issuer are not; another facility's
reader gets 404; a wrong token, a source that is down and an answer that is not a Bundle are the
source's failure on the priors line; asking again stores nothing twice, and a report amended at the
hospital since becomes the shown version with the earlier one kept under it."""

# ruff: noqa: F811 -- the reading-screen fixtures are imported from tests/reports and tests/worklist
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from datetime import datetime

import psycopg
import pytest
from django.db import connection
from django.test import Client

from accounts.tokens import api_token_issue
from imaging.models import HistoricalReport, Order, PriorRetrieval
from imaging.priors import prior_status_text
from imaging.storage import storage_root
from interfaces.fhir.prior_source import _answer, html_text, patient_system
from interfaces.tasks import priors_fetch_task
from tests.conftest import enrol_totp
from tests.hardening.uvicorn_process import ROOT, uvicorn_server
from tests.interfaces import fhir_hospital as hospital
from tests.net import free_port
from tests.reports.conftest import claimed_head_ct, ct_head_template  # noqa: F401
from tests.worklist.conftest import make_eligible, neuro_reader  # noqa: F401

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the hospital's server needs PostgreSQL"),
]

TOKEN_ENV = "READROOM_TEST_LAKESHORE_FHIR_TOKEN"


def _admin_connection():
    settings = connection.settings_dict
    return psycopg.connect(
        dbname="postgres", host=settings.get("HOST") or "127.0.0.1", port=settings.get("PORT") or 5432,
        user=settings.get("USER") or None, password=settings.get("PASSWORD") or None, autocommit=True,
    )  # fmt: skip


def _database_copy(name: str) -> None:
    """A migrated database of the hospital's own: a copy of the run's template (xdist), else of this
    worker's test database, which no test holds between modules (transactional tests flush it)."""
    settings = connection.settings_dict
    template = settings["TEST"].get("TEMPLATE") or settings["NAME"]
    connection.close()
    with _admin_connection() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for attempt in range(10):  # another worker may be copying the template this instant
            try:
                if template == settings["NAME"]:
                    admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                        [template],
                    )
                admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                return
            except psycopg.errors.ObjectInUse:
                time.sleep(0.5 * (attempt + 1))
        raise RuntimeError(f"could not copy {template}")


@pytest.fixture(scope="module")
def ehr(django_db_setup, django_db_blocker, tmp_path_factory):
    """The hospital's FHIR server, seeded: its URL, the API token of ReadRoom's account there, and
    the ids of the patient's reports."""
    name = f"{connection.settings_dict['NAME']}_ehr"
    url = f"postgres://postgres@127.0.0.1:5432/{name}"
    data = tmp_path_factory.mktemp("ehr")
    with django_db_blocker.unblock():
        _database_copy(name)
    stack = contextlib.ExitStack()
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("CELERY_TASK_ALWAYS_EAGER", "true")  # its own signals' tasks, run in place
            seeded = _hospital_shell(url, data, "seed()")
            server = stack.enter_context(uvicorn_server(data, url))
        yield {"url": f"{server.url}/fhir/r4", "database": url, "data": data, **json.loads(seeded)}
    finally:
        with django_db_blocker.unblock():
            stack.close()
            with _admin_connection() as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _hospital_shell(database_url: str, data, call: str) -> str:
    """Run ``tests.interfaces.fhir_hospital.<call>`` in the hospital's database (production settings,
    as its server runs); its last line of output."""
    import base64
    import os

    from django.conf import settings

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "radiology.settings.production",
        "DATABASE_URL": database_url,
        "SECRET_KEY": settings.SECRET_KEY,
        "READROOM_STORAGE_KEY": base64.b64encode(b"h" * 32).decode(),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "READROOM_DATA_DIR": str(data),
        "CELERY_TASK_ALWAYS_EAGER": "true",
        "LOG_LEVEL": "WARNING",
    }
    command = f"from tests.interfaces.fhir_hospital import *; {call}"
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", command],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def fhir_source(ehr, **changes) -> dict:
    return {
        "name": "Lakeshore EHR", "method": "fhir", "base_url": ehr["url"],
        "auth": {"type": "bearer", "token_env": TOKEN_ENV},
        "patient_identifier_system": hospital.EHR_SYSTEM, "count": 5, "lookback_days": 3650,
        "timeout_seconds": 30, **changes,
    }  # fmt: skip


@pytest.fixture
def reading(ehr, claimed_head_ct, image_store, monkeypatch):
    """The claimed head CT of the patient the hospital knows as MRN7001, at a facility whose prior
    source is the hospital's FHIR server, with ReadRoom's token for it in the environment."""
    monkeypatch.setenv(TOKEN_ENV, ehr["token"])
    patient = claimed_head_ct.patient
    patient.mrn = hospital.MRN
    patient.save(update_fields=["mrn"])
    facility = claimed_head_ct.facility
    facility.prior_sources = [fhir_source(ehr)]
    facility.save(update_fields=["prior_sources"])
    return claimed_head_ct


def ask(study, retries: int = 0) -> None:
    """The priors task as its retry would run it (the first attempt comes from the order trigger)."""
    priors_fetch_task.apply(args=(study.patient_id,), kwargs={"study_id": study.pk}, retries=retries)


def fragment(client, study):
    return client.get(f"/studies/{study.pk}/report/priors/")


def test_the_patients_reports_are_stored_encrypted_and_shown_beside_the_editor_with_their_source(
    ehr, reading, neuro_reader, verified_client, dr_msk_wi, lakeview_interfaces, admin_lakeview
):
    current = reading
    patient = current.patient
    # when a new order of the patient arrives (the priors task runs after its commit)
    Order.objects.create(
        facility=current.facility, patient=patient, accession_number="A-FHIR-1", procedure_code="71250",
        procedure_text="CT CHEST WO CONTRAST",
    )  # fmt: skip
    # then the hospital's three reports of the patient in the lookback are kept, read-only, each with
    # its id there; never the namesake's, the same MRN under another issuer, or the 2012 one
    reports = {r.fhir_id: r for r in HistoricalReport.objects.filter(patient=patient)}
    ids = {k: str(v) for k, v in ehr["reports"].items()}
    assert set(reports) == set(ids.values())
    chest, abdomen, knee = (reports[ids[k]] for k in ("chest", "abdomen", "knee"))
    assert (chest.result_status, abdomen.result_status, knee.result_status) == ("F", "A", "P")
    assert (chest.accession_number, chest.radiologist_name, chest.source, chest.facility_id) == (
        "H-CT-2025", "Martin Hale, MD", "Lakeshore EHR", current.facility_id,
    )  # fmt: skip
    assert chest.observed_at == datetime(2025, 3, 1, 10, 15, tzinfo=hospital.ZONE)
    assert chest.procedure_text == "CT CHEST WO CONTRAST — final report"
    retrieval = PriorRetrieval.objects.get(patient=patient, order__isnull=False)
    assert (retrieval.status, retrieval.last_error) == ("retrieved", "")
    # the text is in the encrypted store, never in the clear
    stored = (storage_root() / chest.storage_path).read_bytes()
    assert b"nodule" not in stored and b"IMPRESSION" not in stored
    # and the claimant's reading screen shows them beside the editor, with the source and the reader
    page = fragment(verified_client(neuro_reader), current)
    assert page.status_code == 200
    body = page.content.decode()
    for text in (*hospital.CHEST.splitlines(), hospital.ABDOMEN, hospital.ADDENDUM, hospital.KNEE):
        assert text in body
    assert "from FHIR, Lakeshore EHR" in body and "Read by Martin Hale, MD" in body
    assert "Amended report" in body and "Preliminary (not final) report" in body
    assert "CT CHEST WO CONTRAST — final report · H-CT-2025" in body and "2025-03-01" in body
    for absent in (hospital.NAMESAKE, hospital.ELSEWHERE, hospital.OLD):
        assert absent not in body
    # another facility's reader (on shift there) and admin get 404 for the fragment and the page
    enrol_totp(dr_msk_wi)
    make_eligible(dr_msk_wi, lakeview_interfaces)
    elsewhere = verified_client(dr_msk_wi)
    assert fragment(elsewhere, current).status_code == 404
    assert elsewhere.get(f"/studies/{current.pk}/report/").status_code == 404
    admin = Client()
    admin.force_login(admin_lakeview)
    assert fragment(admin, current).status_code == 404


def test_a_wrong_token_is_the_sources_failure_retried_and_shown(ehr, reading, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "not-the-token")
    # when the priors are asked (first attempt, then the three retries)
    ask(reading)
    ask(reading, retries=3)
    # then the source failed, said why, was tried four times, and nothing was stored
    retrieval = PriorRetrieval.objects.get(patient=reading.patient)
    assert (retrieval.status, retrieval.attempts, retrieval.last_error) == (
        "failed", 4, "FHIR: authentication refused (HTTP 401)",
    )  # fmt: skip
    assert (
        prior_status_text(reading) == "0 priors retrieved, 1 failed: FHIR: authentication refused (HTTP 401)"
    )
    assert not HistoricalReport.objects.exists()
    # and once the right token is configured, the next question brings the reports
    monkeypatch.setenv(TOKEN_ENV, ehr["token"])
    ask(reading)
    retrieval.refresh_from_db()
    assert (retrieval.status, retrieval.last_error) == ("retrieved", "")
    assert HistoricalReport.objects.filter(patient=reading.patient).count() == 3


def test_a_token_not_configured_is_shown(reading, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV)
    ask(reading)
    assert (
        PriorRetrieval.objects.get().last_error
        == f"FHIR: credentials not configured (${TOKEN_ENV} is not set)"
    )


@pytest.mark.parametrize(
    "base, error",
    [
        ("down", "FHIR: source unreachable"),
        # a real answer of the server that is no Bundle: its CapabilityStatement
        ("metadata", "FHIR: the answer is not a valid Bundle"),
        ("not-fhir", "FHIR: HTTP 404 from the source"),  # a base URL that is no FHIR endpoint
    ],
)
def test_a_source_down_or_answering_no_bundle_fails_and_stores_nothing(ehr, reading, base, error):
    url = {
        "down": f"http://127.0.0.1:{free_port()}/fhir/r4",
        "metadata": f"{ehr['url']}/metadata?ignored=",
        "not-fhir": f"{ehr['url']}/NoSuchResource",
    }[base]
    reading.facility.prior_sources = [fhir_source(ehr, base_url=url)]
    reading.facility.save(update_fields=["prior_sources"])
    ask(reading)
    retrieval = PriorRetrieval.objects.get()
    assert (retrieval.status, retrieval.last_error) == ("failed", error)
    assert not HistoricalReport.objects.exists()


def test_asking_again_stores_nothing_twice_and_an_amended_report_replaces_the_shown_one(
    ehr, reading, neuro_reader, verified_client
):
    patient = reading.patient
    ask(reading)
    first = set(HistoricalReport.objects.values_list("pk", "fhir_id", "storage_path"))
    assert len(first) == 3
    # when the same question is asked again (another order, a retry): nothing new
    ask(reading)
    ask(reading)
    assert set(HistoricalReport.objects.values_list("pk", "fhir_id", "storage_path")) == first
    # when the hospital amends the chest report (an addendum signed there) and the priors are asked
    chest_id = ehr["reports"]["chest"]
    _hospital_shell(ehr["database"], ehr["data"], f"addendum({chest_id}, {hospital.LATE_ADDENDUM!r})")
    ask(reading)
    # then the amended version is shown, and the final one it replaces is kept under it
    shown = HistoricalReport.objects.get(fhir_id=str(chest_id), superseded_at__isnull=True)
    assert shown.result_status == "A" and shown.supersedes.result_status == "F"
    assert HistoricalReport.objects.filter(patient=patient).count() == 4
    body = fragment(verified_client(neuro_reader), reading).content.decode()
    assert hospital.LATE_ADDENDUM in body and "Replaced: Final, received" in body
    assert "replaces 1 earlier version" in body
    # and asking once more changes nothing
    ask(reading)
    assert HistoricalReport.objects.filter(patient=patient).count() == 4


def test_readrooms_own_search_pages_are_followed_and_the_newest_exams_kept(ehr, reading):
    """ReadRoom's FHIR API pages by id (newest record first) and ignores _sort: its self link does
    not list it, so the client reads every page and picks the newest exams itself."""
    import urllib.request
    from urllib.parse import parse_qsl, urlencode, urlsplit

    from django.utils import timezone

    from interfaces.fhir.prior_source import fhir_reports_find

    source = fhir_source(ehr, count=2)
    ids = {k: str(v) for k, v in ehr["reports"].items()}
    # given the server's first page of 2: the knee (2023) and the abdomen (2024) — the chest (2025),
    # the newest exam, is on page 2
    query = urlencode([("patient.identifier", f"{hospital.EHR_SYSTEM}|{hospital.MRN}"), ("_count", "2"),
                       ("date", "ge2016-01-01"), ("_sort", "-date")])  # fmt: skip
    request = urllib.request.Request(  # noqa: S310 — the test's own server
        f"{ehr['url']}/DiagnosticReport?{query}",
        headers={"Accept": "application/fhir+json", "Authorization": f"Bearer {ehr['token']}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 — the test's own server
        first = json.loads(response.read())
    links = {link["relation"]: link["url"] for link in first["link"]}
    assert {"self", "next"} <= set(links)
    assert "_sort" not in dict(parse_qsl(urlsplit(links["self"]).query))
    on_first = {
        e["resource"]["id"] for e in first["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"
    }
    assert on_first == {ids["knee"], ids["abdomen"]}
    # when ReadRoom's client asks with count 2
    answer = fhir_reports_find(
        source, mrn=hospital.MRN, authority=hospital.EHR_OID, zone=hospital.ZONE,
        today=timezone.localdate(timezone=hospital.ZONE),
    )  # fmt: skip
    # then it followed the next link and kept the two newest exams, the chest from page 2
    assert answer.pages == 2
    assert [r.fhir_id for r in answer.reports] == [ids["chest"], ids["abdomen"]]
    # and through the task: those two are stored, the knee is not
    reading.facility.prior_sources = [source]
    reading.facility.save(update_fields=["prior_sources"])
    ask(reading)
    assert set(HistoricalReport.objects.values_list("fhir_id", flat=True)) == {ids["chest"], ids["abdomen"]}


# --- the parts without a server: what is sent as the system, what is read as text ----------------


def test_the_mrn_system_is_the_configured_one_else_the_issuer_as_readrooms_fhir_writes_it():
    assert patient_system({"patient_identifier_system": "urn:oid:1.2.3"}, "LAKESHORE") == "urn:oid:1.2.3"
    assert patient_system({}, "2.16.840.1.113883.3.4242") == "urn:oid:2.16.840.1.113883.3.4242"
    assert patient_system({}, "https://ehr.example.org/mrn") == "https://ehr.example.org/mrn"
    assert patient_system({}, "LAKESHORE") == "LAKESHORE"  # the bare PID-3.4 name


def test_html_is_read_as_text_with_nothing_of_the_markup():
    markup = (
        "<div><h1>CT HEAD</h1><p>No <b>acute</b> bleed &amp; no mass.</p>"
        "<script>alert('x')</script><style>p{}</style><ul><li>one</li><li>two</li></ul></div>"
    )
    assert html_text(markup) == "CT HEAD\n\nNo acute bleed & no mass.\n\none\n\ntwo"


def test_a_server_that_ignored_the_patient_parameter_never_gives_another_patients_report():
    from datetime import date
    from zoneinfo import ZoneInfo

    from fhir.resources.R4B.bundle import Bundle

    def entry(rid: str, mrn: str, system: str = hospital.EHR_SYSTEM, **extra) -> dict:
        return {
            "resource": {
                "resourceType": "DiagnosticReport", "id": rid, "status": "final", "code": {"text": "CT"},
                "subject": {"reference": f"Patient/{rid}", "identifier": {"system": system, "value": mrn}},
                "effectiveDateTime": "2025-03-01T10:00:00Z", "conclusion": f"report {rid}", **extra,
            }
        }  # fmt: skip

    lab = [{"coding": [{"code": "LAB", "system": "http://terminology.hl7.org/CodeSystem/v2-0074"}]}]
    entries = [
        entry("1", hospital.MRN),
        entry("2", "MRN7002"),  # the namesake
        entry("3", hospital.MRN, "urn:oid:9.9"),  # the same MRN under another issuer
        entry("4", hospital.MRN, status="entered-in-error"),
        entry("5", hospital.MRN, category=lab),
        entry("6", hospital.MRN, status="registered"),
    ]
    bundle = Bundle.model_validate({"resourceType": "Bundle", "type": "searchset", "entry": entries})
    answer = _answer(
        bundle, system=hospital.EHR_SYSTEM, mrn=hospital.MRN, zone=ZoneInfo("UTC"), oldest=date(2020, 1, 1),
        count=5,
    )  # fmt: skip
    assert [r.fhir_id for r in answer.reports] == ["1"]
    assert answer.withdrawn == ["4"] and answer.skipped == 4


def test_a_report_the_source_withdraws_is_hidden_and_kept(chicago, image_store):
    from imaging.facts import FhirReportFacts
    from imaging.models import Patient
    from imaging.prior_reports import historical_documents
    from imaging.report_history import fhir_reports_record
    from tests.worklist.conftest import make_study

    current = make_study(chicago, code="71250", text="CT CHEST WO CONTRAST")
    facts = FhirReportFacts(
        fhir_id="77", fhir_version="1", result_status="F", accession_number="", procedure_code="",
        procedure_text="CT CHEST", observed_at=None, reported_at=None, radiologist_name="",
        text="Clear lungs.",
    )  # fmt: skip
    patient = Patient.objects.get(pk=current.patient_id)
    # given the source's report, stored and shown
    first = fhir_reports_record(facility=chicago, patient=patient, source="EHR", reports=[facts])
    assert first.stored == 1 and [d.text for d in historical_documents(current)] == ["Clear lungs."]
    # when the source says it was entered in error (a wrong-patient report, say)
    later = fhir_reports_record(
        facility=chicago, patient=patient, source="EHR", reports=[], withdrawn_ids=["77"]
    )
    # then it is no longer shown, and its row and text are kept
    assert later.withdrawn == 1 and historical_documents(current) == []
    assert HistoricalReport.objects.get(fhir_id="77").superseded_at is not None


def test_readrooms_fhir_api_takes_its_tokens_as_bearer_too(client, ops_omar):
    key = api_token_issue(user=ops_omar).key
    assert client.get("/fhir/r4/DiagnosticReport", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200
    assert client.get("/fhir/r4/DiagnosticReport", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/fhir/r4/DiagnosticReport", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200


# --- SMART Backend Services (interfaces/smart_backend.py; docs/priors.md "SMART Backend Services") --

KEY_ENV = "READROOM_TEST_LAKESHORE_SMART_KEY"
CLIENT_ID, KID = "readroom-lakeshore", "rr-2026-1"


class AuthorizationServer:
    """The EHR's OAuth token endpoint as SMART Backend Services specifies it, its client
    authentication done by Authlib's RFC 7523 server side (``JWTBearerClientAssertion``: an
    implementation of its own, on joserfc, not the PyJWT that ReadRoom signs with): it knows ReadRoom's
    client id and public key (registered as a JWKS would be) and checks each assertion's signature,
    iss = sub = the client id, aud = this endpoint, exp and a jti never seen before; the test adds
    SMART's rules on top (the kid, a lifetime of at most 5 minutes). It answers ``tokens`` in turn
    (the last one from then on), each with ``expires_in``; a refused assertion gets 401
    ``invalid_client`` (RFC 6749 §5.2)."""

    def __init__(self, public_key, tokens: list[str], expires_in: int = 300, delay: float = 0.0):
        import http.server
        import threading

        self.tokens, self.expires_in, self.delay = list(tokens), expires_in, delay
        self.requests: list[dict] = []  # each token request's form and verified claims (or why refused)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _token_handler(self))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/oauth2/token"
        self.client_auth = _smart_client_authentication(self.url, public_key)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, body: str) -> tuple[int, dict]:
        from types import SimpleNamespace
        from urllib.parse import parse_qs

        import jwt
        from authlib.oauth2.rfc6749 import InvalidClientError

        time.sleep(self.delay)  # an endpoint slow to answer: concurrent sign-ins overlap
        form = {k: v[0] for k, v in parse_qs(body).items()}
        record: dict = {"form": form}
        self.requests.append(record)
        request = SimpleNamespace(form=form, client=None)
        try:
            assert form.get("grant_type") == "client_credentials"
            client = self.client_auth(
                lambda client_id: _Client() if client_id == CLIENT_ID else None, request
            )
            assert client is not None, "no client assertion"
            header, claims = jwt.get_unverified_header(form["client_assertion"]), self.client_auth.claims
            assert header.get("kid") == KID and header.get("typ") == "JWT"  # SMART: kid and typ required
            assert claims["exp"] - time.time() <= 300  # SMART: exp no more than five minutes ahead
        except (AssertionError, InvalidClientError) as exc:
            record["refused"] = repr(exc)
            return 401, {"error": "invalid_client", "error_description": "assertion refused"}
        record.update(claims=dict(claims), alg=header["alg"])
        token = self.tokens.pop(0) if len(self.tokens) > 1 else self.tokens[0]
        return 200, {"access_token": token, "token_type": "bearer", "expires_in": self.expires_in,
                     "scope": form.get("scope", "")}  # fmt: skip

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Client:
    """The registered client as Authlib's server asks it (the token endpoint's auth method)."""

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "client_assertion_jwt" and endpoint == "token"


def _smart_client_authentication(token_url: str, public_key):
    """Authlib's RFC 7523 client authentication, configured as a SMART server is: its audience, the
    registered key, a jti accepted once, and SMART's two algorithms (joserfc allows only its
    "recommended" ones unless told, and RS384 / ES384 are not among them)."""
    from authlib.oauth2.rfc6749 import InvalidClientError
    from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from joserfc import jwt as jose_jwt
    from joserfc.errors import JoseError
    from joserfc.jwk import import_key

    public_pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_type = "RSA" if isinstance(public_key, rsa.RSAPublicKey) else "EC"

    class SmartClientAssertion(JWTBearerClientAssertion):
        seen: set[str] = set()
        claims: dict = {}

        def get_audiences(self):
            return [token_url]

        def validate_jti(self, claims, jti):
            if jti in self.seen:
                return False
            self.seen.add(jti)
            return True

        def resolve_client_public_key(self, client):
            return import_key(public_pem, key_type)

        def process_assertion_claims(self, assertion, resolve_key):
            try:
                token = jose_jwt.decode(assertion, resolve_key, algorithms=["RS384", "ES384"])
            except JoseError as exc:
                raise InvalidClientError(description=exc.description) from exc
            self.verify_claims(token.claims)
            self.claims = token.claims
            return token.claims

    return SmartClientAssertion()


def _token_handler(server: AuthorizationServer):
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            status, answer = server.answer(self.rfile.read(length).decode())
            body = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler


def _key_pair(alg: str):
    """A private key as PEM text (what the environment variable holds) and its public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key = rsa.generate_private_key(65537, 2048) if alg == "RS384" else ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return pem, key.public_key()


@pytest.fixture
def smart(ehr, reading, monkeypatch):
    """The reading's facility's FHIR source authenticated by SMART Backend Services, with ReadRoom's
    key in the environment; the EHR's token endpoint issues ReadRoom's API token of the EHR."""
    from interfaces import smart_backend

    smart_backend._kept.clear()  # tokens are kept per process: each test starts with none
    servers: list[AuthorizationServer] = []

    def configure(alg: str = "RS384", tokens: list[str] | None = None, expires_in: int = 300, pem=None):
        key_pem, public = _key_pair(alg)
        monkeypatch.setenv(KEY_ENV, pem if pem is not None else key_pem)
        server = AuthorizationServer(public, tokens or [ehr["token"]], expires_in)
        servers.append(server)
        auth = {"type": "smart_backend", "client_id": CLIENT_ID, "key_env": KEY_ENV, "kid": KID, "alg": alg,
                "token_url": server.url}  # fmt: skip
        reading.facility.prior_sources = [fhir_source(ehr, auth=auth)]
        reading.facility.save(update_fields=["prior_sources"])
        return server

    yield configure
    for server in servers:
        server.close()
    smart_backend._kept.clear()


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_a_smart_backend_source_signs_in_with_its_key_and_its_token_is_kept_until_it_expires(
    reading, smart, alg
):
    from interfaces.smart_backend import DEFAULT_SCOPE

    server = smart(alg)
    # when the priors are asked
    ask(reading)
    # then ReadRoom asked the EHR's token endpoint once, with an assertion the endpoint verified
    # against ReadRoom's registered public key, and read the reports with the token it got
    retrieval = PriorRetrieval.objects.get(patient=reading.patient)
    assert (retrieval.status, retrieval.last_error) == ("retrieved", "")
    assert HistoricalReport.objects.filter(patient=reading.patient).count() == 3
    (first,) = server.requests
    assert "refused" not in first and first["alg"] == alg
    assert first["form"]["scope"] == DEFAULT_SCOPE
    assert (first["claims"]["iss"], first["claims"]["aud"]) == (CLIENT_ID, server.url)
    # and asking again within the token's life reuses it: no second sign-in
    ask(reading)
    assert len(server.requests) == 1


def test_a_smart_token_that_expired_is_renewed_with_a_new_assertion(reading, smart):
    server = smart(expires_in=1)  # renewed with a fifth of its life left: after 0.8 s
    ask(reading)
    time.sleep(1.0)
    ask(reading)
    # two sign-ins, each with an assertion of its own (the endpoint refuses a jti seen before)
    assert [("refused" in r) for r in server.requests] == [False, False]
    assert PriorRetrieval.objects.get(patient=reading.patient).status == "retrieved"


def test_a_smart_token_the_fhir_server_refuses_is_renewed_once_and_then_the_source_fails(ehr, reading, smart):
    # given an endpoint whose first token the FHIR server does not know (revoked, say)
    server = smart(tokens=["revoked-token", ehr["token"]])
    ask(reading)
    # then the 401 dropped it, a new token was asked for, and the reports came with it
    assert len(server.requests) == 2
    assert PriorRetrieval.objects.get(patient=reading.patient).status == "retrieved"
    assert HistoricalReport.objects.filter(patient=reading.patient).count() == 3


def test_a_smart_token_refused_again_after_renewal_fails_the_source_without_a_loop(reading, smart):
    server = smart(tokens=["not-known-there"])
    ask(reading)
    retrieval = PriorRetrieval.objects.get(patient=reading.patient)
    assert (retrieval.status, retrieval.last_error) == ("failed", "FHIR: authentication refused (HTTP 401)")
    assert len(server.requests) == 2  # the first token and one renewal, never more
    assert not HistoricalReport.objects.exists()


def test_an_assertion_signed_with_another_key_is_refused_and_shown(reading, smart):
    other_pem, _public = _key_pair("RS384")
    server = smart(pem=other_pem)  # the endpoint holds the registered key, ReadRoom signs with another
    ask(reading)
    retrieval = PriorRetrieval.objects.get(patient=reading.patient)
    assert (retrieval.status, retrieval.last_error) == (
        "failed", "FHIR: token endpoint refused (HTTP 401: invalid_client)",
    )  # fmt: skip
    assert "invalid_client" in server.requests[0]["refused"]
    assert prior_status_text(reading).endswith("FHIR: token endpoint refused (HTTP 401: invalid_client)")


@pytest.mark.parametrize(
    "pem, error",
    [
        ("", f"FHIR: credentials not configured (${KEY_ENV} is not set)"),
        ("not a key", f"FHIR: the private key in ${KEY_ENV} cannot sign RS384 (a PEM RSA or EC P-384 key)"),
    ],
)
def test_a_smart_key_missing_or_unreadable_is_shown_without_asking_the_endpoint(reading, smart, pem, error):
    server = smart(pem=pem)
    ask(reading)
    assert PriorRetrieval.objects.get(patient=reading.patient).last_error == error
    assert server.requests == []


def test_the_token_endpoint_is_found_in_the_bases_smart_configuration():
    """Without ``token_url`` the FHIR base's ``.well-known/smart-configuration`` names the endpoint
    (asked once per base); an answer without one is the source's failure."""
    import http.server
    import threading

    from imaging.priors import SourceUnavailable
    from interfaces import smart_backend

    asked: list[str] = []
    answers = {"/ok/r4/.well-known/smart-configuration": {"token_endpoint": "https://ehr.example.org/token"},
               "/none/r4/.well-known/smart-configuration": {"issuer": "https://ehr.example.org"}}  # fmt: skip

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            body = json.dumps(answers[self.path]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    auth = {"type": "smart_backend", "client_id": CLIENT_ID, "key_env": KEY_ENV, "kid": KID}
    try:
        smart_backend._endpoints.clear()
        ok = {"base_url": f"{base}/ok/r4/", "auth": auth}
        assert smart_backend.token_endpoint(ok, timeout=5) == "https://ehr.example.org/token"
        assert smart_backend.token_endpoint(ok, timeout=5) == "https://ehr.example.org/token"
        assert asked == ["/ok/r4/.well-known/smart-configuration"]  # once per base
        with pytest.raises(SourceUnavailable, match="smart-configuration names no token_endpoint"):
            smart_backend.token_endpoint({"base_url": f"{base}/none/r4", "auth": auth}, timeout=5)
    finally:
        httpd.shutdown()
        httpd.server_close()
        smart_backend._endpoints.clear()


def test_threads_that_need_a_token_at_once_share_one_sign_in(monkeypatch):
    """Side-by-side fetches of one retrieval find no token together: one asks the endpoint, the
    others wait for its token (interfaces.smart_backend.bearer)."""
    from concurrent.futures import ThreadPoolExecutor

    from interfaces import smart_backend

    pem, public = _key_pair("ES384")
    monkeypatch.setenv(KEY_ENV, pem)
    server = AuthorizationServer(public, ["the-token"], delay=0.3)
    source = {"base_url": "https://ehr.example.org/r4", "auth": {
        "type": "smart_backend", "client_id": CLIENT_ID, "key_env": KEY_ENV, "kid": KID, "alg": "ES384",
        "token_url": server.url}}  # fmt: skip
    smart_backend._kept.clear()
    try:
        with ThreadPoolExecutor(4) as pool:
            tokens = list(pool.map(lambda _: smart_backend.bearer(source, timeout=10), range(4)))
    finally:
        server.close()
        smart_backend._kept.clear()
    assert tokens == ["the-token"] * 4
    assert len(server.requests) == 1


def test_a_refusal_of_an_old_token_keeps_the_one_another_thread_renewed_meanwhile():
    """Two fetches held the same token; the first was refused and renewed it; the second's refusal
    of the old token must not drop the new one (it would cost one more sign-in)."""
    from interfaces import smart_backend

    auth = {"type": "smart_backend", "client_id": CLIENT_ID, "key_env": KEY_ENV, "kid": KID}
    source = {"base_url": "https://ehr.example.org/r4", "auth": auth}
    key = smart_backend._cache_key(source)
    smart_backend._kept[key] = smart_backend._Kept("renewed", time.monotonic() + 60)
    try:
        smart_backend.refused(source, "old")
        assert smart_backend._current(key) == "renewed"
        smart_backend.refused(source, "renewed")
        assert smart_backend._current(key) is None
    finally:
        smart_backend._kept.clear()
