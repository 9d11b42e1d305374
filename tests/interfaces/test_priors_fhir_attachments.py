"""A FHIR report source's paging and presentedForms given by ``url`` only (docs/priors.md, "FHIR
DiagnosticReport sources"), against a small standard-library HTTP server that plays the hospital's
FHIR server: it serves searchset pages and the reports' attachments (raw, or as a Binary).

Why not ReadRoom's own FHIR API here (the hospital of tests/interfaces/test_priors_fhir.py): it
inlines every presentedForm (no ``url``, no Binary endpoint), and it serves only radiology reports
with statuses the client keeps, so neither a page of dropped entries nor a url-only text can come
from it. ReadRoom's own paging is tested live in test_priors_fhir.py; what this server gives is
canned, valid R4 JSON (each page is parsed by ``fhir.resources`` on our side as any answer is)."""

# ruff: noqa: F811 -- the reading-screen fixtures are imported from tests/reports and tests/worklist
from __future__ import annotations

import base64
import contextlib
import html
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from imaging.models import HistoricalReport, PriorRetrieval
from imaging.priors import prior_status_text
from imaging.storage import storage_root
from interfaces.fhir import prior_source
from interfaces.tasks import priors_fetch_task
from tests.interfaces.fhir_hospital import EHR_SYSTEM, MRN
from tests.reports.conftest import claimed_head_ct, ct_head_template  # noqa: F401
from tests.worklist.conftest import neuro_reader  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN_ENV = "READROOM_TEST_HARBOR_FHIR_TOKEN"
TOKEN = "harbor-token-5c1d"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
RAD = [{"coding": [{"system": V2_0074, "code": "RAD"}]}]
LAB = [{"coding": [{"system": V2_0074, "code": "LAB"}]}]


class Server:
    """A loopback HTTP server: ``routes[path or path?query] = (status, headers, body)`` (a callable
    gives them per request); every request is kept (path, Accept, Authorization)."""

    def __init__(self):
        self.routes: dict = {}
        self.requests: list[dict] = []
        self.delay = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(
                    {"path": self.path, "accept": self.headers.get("Accept", ""),
                     "authorization": self.headers.get("Authorization", "")}
                )  # fmt: skip
                split = urlsplit(self.path)
                route = outer.routes.get(self.path) or outer.routes.get(split.path)
                if callable(route):
                    route = route()
                status, headers, body = route or (404, {}, b"")
                time.sleep(outer.delay if split.path.startswith("/fhir/Binary") else 0)
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.base = f"{self.origin}/fhir"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers():
    with contextlib.ExitStack() as stack:
        ehr, elsewhere = Server(), Server()
        stack.callback(ehr.close)
        stack.callback(elsewhere.close)
        yield ehr, elsewhere


def fhir_json(resource: dict) -> tuple[int, dict, bytes]:
    return 200, {"Content-Type": "application/fhir+json"}, json.dumps(resource).encode()


def report(rid: str, *, when: str, status: str = "final", category=RAD, mrn: str = MRN, **extra) -> dict:
    return {
        "resourceType": "DiagnosticReport", "id": rid, "meta": {"versionId": "1"}, "status": status,
        "category": category, "code": {"text": f"CT CHEST {rid}"},
        "subject": {"reference": "Patient/p1", "identifier": {"system": EHR_SYSTEM, "value": mrn}},
        "effectiveDateTime": when, **extra,
    }  # fmt: skip


def inline(text: str) -> list[dict]:
    return [{"contentType": "text/plain", "data": base64.b64encode(text.encode()).decode()}]


def page(server: Server, entries: list[dict], *, sorted_: bool = True, next_url: str | None = None) -> tuple:
    self_url = f"{server.base}/DiagnosticReport?patient.identifier=x" + ("&_sort=-date" if sorted_ else "")
    links = [{"relation": "self", "url": self_url}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    full = [{"fullUrl": f"{server.base}/{e['resourceType']}/{e['id']}", "resource": e} for e in entries]
    return fhir_json({"resourceType": "Bundle", "type": "searchset", "link": links, "entry": full})


@pytest.fixture
def reading(claimed_head_ct, image_store, servers, monkeypatch):
    """The claimed head CT of the patient MRN7001, at a facility whose prior source is the stdlib
    server, with ReadRoom's token for it in the environment."""
    ehr, _ = servers
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    patient = claimed_head_ct.patient
    patient.mrn = MRN
    patient.save(update_fields=["mrn"])
    claimed_head_ct.facility.prior_sources = [
        {"name": "Harbor EHR", "method": "fhir", "base_url": ehr.base,
         "auth": {"type": "bearer", "token_env": TOKEN_ENV}, "patient_identifier_system": EHR_SYSTEM,
         "count": 2, "lookback_days": 3650, "timeout_seconds": 2}
    ]  # fmt: skip
    claimed_head_ct.facility.save(update_fields=["prior_sources"])
    return claimed_head_ct


def ask(study) -> PriorRetrieval:
    priors_fetch_task.apply(args=(study.patient_id,), kwargs={"study_id": study.pk})
    return PriorRetrieval.objects.get(patient=study.patient)


def shown(patient) -> dict[str, str]:
    from imaging.storage import encrypted_read

    return {
        r.fhir_id: encrypted_read(r.storage_path).decode()
        for r in HistoricalReport.objects.filter(patient=patient, superseded_at__isnull=True)
    }


# --- paging ---------------------------------------------------------------------------------------


def test_a_sorted_server_is_paged_until_count_reports_are_kept_and_no_further(reading, servers):
    ehr, _ = servers
    # given a server that sorts (its self link lists _sort) whose first page holds only entries the
    # client drops: a lab report, a registered one, another patient's
    ehr.routes["/fhir/DiagnosticReport"] = page(
        ehr,
        [
            report("lab", when="2026-01-05T10:00:00Z", category=LAB, presentedForm=inline("Hb 12")),
            report("reg", when="2026-01-04T10:00:00Z", status="registered", presentedForm=inline("x")),
            report("other", when="2026-01-03T10:00:00Z", mrn="MRN7002", presentedForm=inline("not ours")),
        ],
        next_url=f"{ehr.base}/DiagnosticReport?page=2",
    )
    ehr.routes["/fhir/DiagnosticReport?page=2"] = page(
        ehr,
        [
            report("ct1", when="2025-12-01T10:00:00Z", presentedForm=inline("Page two, newest.")),
            report("ct2", when="2025-11-01T10:00:00Z", presentedForm=inline("Page two, older.")),
        ],
        next_url=f"{ehr.base}/DiagnosticReport?page=3",
    )
    ehr.routes["/fhir/DiagnosticReport?page=3"] = page(
        ehr, [report("ct3", when="2025-10-01T10:00:00Z", presentedForm=inline("Page three."))]
    )
    # when the priors are asked (count 2)
    retrieval = ask(reading)
    # then the two kept reports come from page 2, page 3 was never asked, and each page got the token
    assert (retrieval.status, retrieval.last_error) == ("retrieved", "")
    assert shown(reading.patient) == {"ct1": "Page two, newest.", "ct2": "Page two, older."}
    assert [r["path"].split("?")[1].split("&")[0] for r in ehr.requests][1:] == ["page=2"]
    assert len(ehr.requests) == 2 and {r["authorization"] for r in ehr.requests} == {f"Bearer {TOKEN}"}


def test_an_unsorted_server_is_read_to_its_last_page_and_the_newest_exams_kept(reading, servers):
    ehr, _ = servers
    # given a server that ignored _sort (no _sort in its self link), the newest exam on its last page
    ehr.routes["/fhir/DiagnosticReport"] = page(
        ehr,
        [report("a", when="2023-01-01T10:00:00Z", presentedForm=inline("2023")),
         report("b", when="2024-01-01T10:00:00Z", presentedForm=inline("2024"))],
        sorted_=False, next_url=f"{ehr.base}/DiagnosticReport?page=2",
    )  # fmt: skip
    ehr.routes["/fhir/DiagnosticReport?page=2"] = page(
        ehr, [report("c", when="2025-01-01T10:00:00Z", presentedForm=inline("2025"))], sorted_=False
    )
    assert ask(reading).status == "retrieved"
    assert shown(reading.patient) == {"c": "2025", "b": "2024"}
    assert len(ehr.requests) == 2


def test_each_page_is_judged_once_as_it_arrives(reading, servers, monkeypatch):
    """Deciding after each page whether enough reports are kept judged every page read so far
    again (quadratic in the pages): each entry is judged once, when its page arrives."""
    ehr, _ = servers
    judged = Counter()
    is_patients = prior_source._is_patients

    def counted(report, patients, **checks):
        judged[report.id] += 1
        return is_patients(report, patients, **checks)

    monkeypatch.setattr(prior_source, "_is_patients", counted)
    source = reading.facility.prior_sources[0]
    reading.facility.prior_sources = [{**source, "count": 4}]
    reading.facility.save(update_fields=["prior_sources"])
    # given a sorted server whose pages each hold a lab report (dropped) and one kept; on page 1 a
    # report whose subject is a bare reference to the Patient that page 2 includes (_include)
    bare = report("bare", when="2025-11-15T10:00:00Z", presentedForm=inline("By reference."))
    bare["subject"] = {"reference": "Patient/p9"}
    patient = {"resourceType": "Patient", "id": "p9", "identifier": [{"system": EHR_SYSTEM, "value": MRN}]}
    pages = [
        [report("lab1", when="2026-01-03T10:00:00Z", category=LAB, presentedForm=inline("Hb")), bare,
         report("ct1", when="2025-12-01T10:00:00Z", presentedForm=inline("One."))],
        [report("lab2", when="2026-01-02T10:00:00Z", category=LAB, presentedForm=inline("Hb")),
         report("ct2", when="2025-11-01T10:00:00Z", presentedForm=inline("Two.")), patient],
        [report("lab3", when="2026-01-01T10:00:00Z", category=LAB, presentedForm=inline("Hb")),
         report("ct3", when="2025-10-01T10:00:00Z", presentedForm=inline("Three."))],
        [report("ct4", when="2025-09-01T10:00:00Z", presentedForm=inline("Four."))],
    ]  # fmt: skip
    for number, entries in enumerate(pages, start=1):
        path = "/fhir/DiagnosticReport" + (f"?page={number}" if number > 1 else "")
        more = f"{ehr.base}/DiagnosticReport?page={number + 1}" if number < len(pages) else None
        ehr.routes[path] = page(ehr, entries, next_url=more)
    # when the priors are asked (count 4)
    retrieval = ask(reading)
    # then the four are kept by page 3 (page 4 never asked), the bare one matched by the Patient
    # page 2 included, and every entry was judged exactly once (before: page 1's four times)
    assert (retrieval.status, retrieval.last_error) == ("retrieved", "")
    assert shown(reading.patient) == {"ct1": "One.", "bare": "By reference.", "ct2": "Two.", "ct3": "Three."}
    assert len(ehr.requests) == 3
    assert judged == Counter({rid: 1 for rid in ("lab1", "bare", "ct1", "lab2", "ct2", "lab3", "ct3")})


def test_paging_is_bounded(reading, servers, monkeypatch):
    ehr, _ = servers
    monkeypatch.setattr(prior_source, "MAX_PAGES", 3)
    # a server whose next link always leads to itself (a broken cursor): asked 3 times, not forever
    ehr.routes["/fhir/DiagnosticReport"] = page(
        ehr, [report("a", when="2023-01-01T10:00:00Z", presentedForm=inline("only"))], sorted_=False,
        next_url=f"{ehr.base}/DiagnosticReport",
    )  # fmt: skip
    assert ask(reading).status == "retrieved"
    assert len(ehr.requests) == 3 and shown(reading.patient) == {"a": "only"}


def test_a_next_link_to_another_host_fails_the_source_and_never_gets_the_token(reading, servers):
    ehr, elsewhere = servers
    ehr.routes["/fhir/DiagnosticReport"] = page(
        ehr, [report("a", when="2025-01-01T10:00:00Z", status="registered")],
        next_url=f"{elsewhere.base}/DiagnosticReport?page=2",
    )  # fmt: skip
    elsewhere.routes["/fhir/DiagnosticReport"] = page(elsewhere, [])
    retrieval = ask(reading)
    netloc = urlsplit(elsewhere.origin).netloc
    assert (retrieval.status, retrieval.last_error) == (
        "failed", f"FHIR: the next page is on another host ({netloc})",
    )  # fmt: skip
    assert prior_status_text(reading).endswith(f"1 failed: FHIR: the next page is on another host ({netloc})")
    assert elsewhere.requests == [] and not HistoricalReport.objects.exists()


# --- presentedForm by url ---------------------------------------------------------------------------


def _pdf(text: str) -> bytes:
    from weasyprint import HTML

    return HTML(string=f"<p>{text}</p>").write_pdf()


def test_url_only_forms_are_fetched_with_the_sources_credentials_as_text(reading, servers, neuro_reader,
                                                                          verified_client):  # fmt: skip
    ehr, _ = servers
    latin = "Lésion stable, pas de nodule."
    ehr.routes["/fhir/DiagnosticReport"] = page(
        ehr,
        [
            # text/plain in its charset, by an absolute url; an HTML one (a PDF beside it: HTML wins)
            report("plain", when="2025-06-01T10:00:00Z",
                   presentedForm=[{"contentType": "text/plain; charset=iso-8859-1",
                                   "url": f"{ehr.base}/Binary/plain"}]),
            report("html", when="2025-05-01T10:00:00Z",
                   presentedForm=[{"contentType": "application/pdf", "url": "Binary/pdf-unused"},
                                  {"contentType": "text/html", "url": "Binary/html"}]),
        ],
        next_url=f"{ehr.base}/DiagnosticReport?page=2",
    )  # fmt: skip
    ehr.routes["/fhir/DiagnosticReport?page=2"] = page(
        ehr,
        [
            # a PDF given by a relative url, and a text the server answers as a FHIR Binary
            report("pdf", when="2025-04-01T10:00:00Z",
                   presentedForm=[{"contentType": "application/pdf", "url": "Binary/pdf"}]),
            report("binary", when="2025-03-01T10:00:00Z",
                   presentedForm=[{"contentType": "text/plain", "url": "Binary/json"}]),
        ],
    )  # fmt: skip
    ehr.routes["/fhir/Binary/plain"] = (
        200,
        {"Content-Type": "text/plain; charset=iso-8859-1"},
        latin.encode("latin-1"),
    )
    ehr.routes["/fhir/Binary/html"] = (
        200, {"Content-Type": "text/html"},
        b"<html><body><h1>US ABDOMEN</h1><p>Cyst <b>unchanged</b>.</p><script>alert(1)</script></body>",
    )  # fmt: skip
    ehr.routes["/fhir/Binary/pdf"] = (200, {"Content-Type": "application/pdf"}, _pdf("Fracture healed."))
    ehr.routes["/fhir/Binary/json"] = fhir_json(
        {"resourceType": "Binary", "contentType": "text/plain",
         "data": base64.b64encode(b"From a Binary resource.").decode()}
    )  # fmt: skip
    source = reading.facility.prior_sources[0]
    reading.facility.prior_sources = [{**source, "count": 4}]
    reading.facility.save(update_fields=["prior_sources"])
    retrieval = ask(reading)
    assert (retrieval.status, retrieval.last_error) == ("retrieved", "")
    texts = shown(reading.patient)
    assert texts["plain"] == latin
    assert texts["html"] == "US ABDOMEN\n\nCyst unchanged."
    assert "Fracture healed." in texts["pdf"]
    assert texts["binary"] == "From a Binary resource."
    binaries = {r["path"]: r for r in ehr.requests if r["path"].startswith("/fhir/Binary")}
    assert set(binaries) == {
        "/fhir/Binary/plain",
        "/fhir/Binary/html",
        "/fhir/Binary/pdf",
        "/fhir/Binary/json",
    }
    assert all(r["authorization"] == f"Bearer {TOKEN}" for r in binaries.values())
    assert binaries["/fhir/Binary/pdf"]["accept"].startswith("application/pdf")
    assert binaries["/fhir/Binary/html"]["accept"].startswith("text/html")
    # stored encrypted like any prior report's text, and shown on the reading screen
    stored = HistoricalReport.objects.get(fhir_id="pdf")
    assert b"Fracture" not in (storage_root() / stored.storage_path).read_bytes()
    body = html.unescape(
        verified_client(neuro_reader).get(f"/studies/{reading.pk}/report/priors/").content.decode()
    )
    assert latin in body and "Cyst unchanged." in body and "alert(1)" not in body


def _url_report(server: Server, path: str = "Binary/r1") -> None:
    server.routes["/fhir/DiagnosticReport"] = page(
        server,
        [report("r1", when="2025-06-01T10:00:00Z", conclusion="Stable nodule.",
                presentedForm=[{"contentType": "text/plain", "url": path}])],
    )  # fmt: skip


@pytest.mark.parametrize(
    "failure, reason",
    [
        ("404", "HTTP 404 from the source"),
        ("slow", "no answer (timed out)"),
        ("large", "the attachment is larger than 10 bytes"),
        ("elsewhere", "its attachment is on another host ({netloc})"),
        ("redirect", "redirected to another host ({netloc})"),
    ],
)
def test_an_attachment_not_fetched_shows_the_report_saying_so_and_the_retry_brings_its_text(
    reading, servers, neuro_reader, verified_client, monkeypatch, failure, reason
):
    ehr, elsewhere = servers
    netloc = urlsplit(elsewhere.origin).netloc
    reason = reason.format(netloc=netloc)
    text = (200, {"Content-Type": "text/plain"}, b"FINDINGS: 6 mm nodule, unchanged.")
    elsewhere.routes["/fhir/Binary/r1"] = text
    _url_report(ehr, f"{elsewhere.base}/Binary/r1" if failure == "elsewhere" else "Binary/r1")
    if failure == "slow":
        ehr.delay = 3  # the source's timeout is 2 s
        ehr.routes["/fhir/Binary/r1"] = text
    elif failure == "large":
        monkeypatch.setattr(prior_source, "MAX_ATTACHMENT", 10)
        ehr.routes["/fhir/Binary/r1"] = text
    elif failure == "redirect":
        ehr.routes["/fhir/Binary/r1"] = (302, {"Location": f"{elsewhere.base}/Binary/r1"}, b"")
    # when the priors are asked and the report's text cannot be fetched
    retrieval = ask(reading)
    # then the report is kept and shown, saying why (with its conclusion); the source failed, so the
    # task asks again; the other host never got a request, nor the token
    note = f"(the report's text could not be fetched: {reason})"
    assert shown(reading.patient) == {"r1": f"{note}\n\nStable nodule."}
    assert (retrieval.status, retrieval.last_error) == (
        "failed", f"FHIR: the text of 1 report could not be fetched ({reason})",
    )  # fmt: skip
    assert elsewhere.requests == []
    page_ = html.unescape(
        verified_client(neuro_reader).get(f"/studies/{reading.pk}/report/priors/").content.decode()
    )
    assert note in page_ and "Stable nodule." in page_
    pending = HistoricalReport.objects.get(fhir_id="r1")
    assert pending.text_pending
    # when the server serves the text (same origin, in time) and the priors are asked again
    monkeypatch.setattr(prior_source, "MAX_ATTACHMENT", 10 * 1024 * 1024)
    ehr.delay = 0
    ehr.routes["/fhir/Binary/r1"] = text
    _url_report(ehr)
    retrieval = ask(reading)
    # then the text replaces the note in place: one row, no earlier version, the note's file removed
    assert (retrieval.status, retrieval.last_error) == ("retrieved", "")
    assert shown(reading.patient) == {"r1": "FINDINGS: 6 mm nodule, unchanged."}
    row = HistoricalReport.objects.get(fhir_id="r1")
    assert (row.pk, row.text_pending, HistoricalReport.objects.count()) == (pending.pk, False, 1)
    assert not (storage_root() / pending.storage_path).exists()
    # and asking once more changes nothing
    ask(reading)
    assert HistoricalReport.objects.get().storage_path == row.storage_path


def test_a_report_whose_text_is_held_is_not_replaced_by_a_note_when_its_url_fails_later(reading, servers):
    ehr, _ = servers
    _url_report(ehr)
    ehr.routes["/fhir/Binary/r1"] = (200, {"Content-Type": "text/plain"}, b"The text.")
    assert ask(reading).status == "retrieved"
    del ehr.routes["/fhir/Binary/r1"]  # the same version, its attachment gone (404)
    ask(reading)
    assert shown(reading.patient) == {"r1": "The text."} and HistoricalReport.objects.count() == 1
