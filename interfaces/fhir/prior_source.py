"""ReadRoom as a FHIR R4 client of a facility's report source (docs/priors.md, "FHIR DiagnosticReport
sources"): the hospital's own reports of the patient, asked by MRN *and* issuer, never by name, and
read into ``FhirReportFacts`` for ``imaging.report_history.fhir_reports_record``.

``GET [base]/DiagnosticReport?patient.identifier=<system>|<mrn>&category=…RAD&date=ge…&_sort=-date
&_count=N``. The Bundle is checked with ``fhir.resources`` (R4B, the models ReadRoom's own FHIR API is
built with) before anything is read from it: an answer that is not a Bundle fails the source, and
nothing of it is stored. Each DiagnosticReport is then checked again on our side, as QIDO-RS answers
are: its subject's identifier (or the included Patient's) must be the patient's MRN in the asked
system — a server that ignored the parameter never gives us another patient's report."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from html.parser import HTMLParser
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from imaging.facts import FhirReportFacts
from imaging.priors import DEFAULT_COUNT, DEFAULT_LOOKBACK_DAYS, SourceUnavailable
from interfaces.dicom.prior_web import web_open
from interfaces.fhir.identifiers import V2_0203, patient_id_system

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"  # diagnostic service sections: RAD
LOINC = "http://loinc.org"
GENERIC_REPORT_CODE = (LOINC, "18748-4")  # "Diagnostic imaging study": any imaging report
RADIOLOGY_CATEGORIES = {(V2_0074, "RAD"), (LOINC, "LP29684-5")}  # LOINC "Radiology" (US Core)
# DiagnosticReport.status kept, as the RIS history keeps F, C and P (a preliminary is shown marked)
KEPT_STATUSES = {"final": "F", "amended": "A", "appended": "A", "corrected": "C", "preliminary": "P"}
WITHDRAWN_STATUSES = {"entered-in-error", "cancelled"}  # a shown version of such an id is hidden
MAX_TEXT = 100_000  # characters, as for the RIS history: longer is skipped, never cut
MAX_ANSWER = 20 * 1024 * 1024  # bytes of one Bundle: a page of reports, not an archive


@dataclass(frozen=True)
class FhirAnswer:
    reports: list[FhirReportFacts]  # the patient's kept reports, newest exam first, at most ``count``
    withdrawn: list[str]  # ids the source now says are entered-in-error or cancelled
    skipped: int  # entries dropped: another patient, another category or status, no text


def patient_system(source: dict, authority: str) -> str:
    """The identifier system the FHIR server knows the facility's MRNs under. The source names it
    (``patient_identifier_system``, e.g. the EHR's ``urn:oid:…``); else it is derived from the
    patient's assigning authority as ReadRoom's own FHIR API writes it: an OID is ``urn:oid:<oid>``,
    a URI stays as it is, and any other name is sent as it is (a server such as ReadRoom's accepts
    the bare PID-3.4 name; other servers need ``patient_identifier_system``)."""
    if source.get("patient_identifier_system"):
        return source["patient_identifier_system"]
    derived = patient_id_system("", authority)
    return derived if not derived.startswith("urn:readroom:") else authority


def fhir_reports_find(source: dict, *, mrn: str, authority: str, zone: ZoneInfo, today: date) -> FhirAnswer:
    """The patient's radiology reports at the source, newest exam first (raises
    ``SourceUnavailable``: down, credentials refused, not a Bundle)."""
    system = patient_system(source, authority)
    count = int(source.get("count") or DEFAULT_COUNT)
    oldest = today - timedelta(days=int(source.get("lookback_days") or DEFAULT_LOOKBACK_DAYS))
    query = [
        ("patient.identifier", f"{system}|{mrn}"),
        ("category", f"{V2_0074}|RAD"),
        ("date", f"ge{oldest.isoformat()}"),
        ("_sort", "-date"),
        ("_count", str(count)),
        ("_include", "DiagnosticReport:subject"),
    ]
    url = f"{source['base_url'].rstrip('/')}/DiagnosticReport?{urlencode(query)}"
    try:
        response = web_open(source, url, FHIR_JSON, timeout=float(source.get("timeout_seconds") or 30))
    except SourceUnavailable as exc:  # the line names the source kind: "FHIR: authentication refused …"
        raise SourceUnavailable(f"FHIR: {exc}") from exc
    try:
        with response:
            body = response.read(MAX_ANSWER + 1)
    except TimeoutError as exc:
        raise SourceUnavailable("FHIR: no answer to the search (timed out)") from exc
    except (ConnectionError, OSError) as exc:
        raise SourceUnavailable("FHIR: connection lost mid-answer") from exc
    if len(body) > MAX_ANSWER:
        raise SourceUnavailable(f"FHIR: the answer is larger than {MAX_ANSWER // 2**20} MB")
    bundle = _bundle(body)
    return _answer(bundle, system=system, mrn=mrn, zone=zone, oldest=oldest, count=count)


def _bundle(body: bytes) -> Bundle:
    try:
        data = json.loads(body)
        if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
            raise ValueError("not a Bundle")
        return Bundle.model_validate(data)
    except (ValueError, ValidationError) as exc:  # JSONDecodeError is a ValueError
        raise SourceUnavailable("FHIR: the answer is not a valid Bundle") from exc


def _answer(bundle: Bundle, *, system: str, mrn: str, zone: ZoneInfo, oldest: date, count: int) -> FhirAnswer:
    resources = [e.resource for e in bundle.entry or [] if e.resource is not None]
    patients = {
        f"Patient/{r.id}": r for r in resources if r.get_resource_type() == "Patient" and r.id is not None
    }
    kept, withdrawn, skipped = [], [], 0
    for report in (r for r in resources if r.get_resource_type() == "DiagnosticReport"):
        if not report.id or not _is_patients(report, patients, system=system, mrn=mrn):
            skipped += 1
            continue
        if report.status in WITHDRAWN_STATUSES:
            withdrawn.append(report.id)
            continue
        facts = _facts(report, zone)
        if facts is None or not _is_radiology(report) or _too_old(facts, oldest):
            skipped += 1
            continue
        kept.append(facts)
    # the server may ignore _sort (ReadRoom's own pages by id): newest exam first here, whatever it did
    kept.sort(key=lambda f: f.observed_at or f.reported_at or datetime.min.replace(tzinfo=zone), reverse=True)
    return FhirAnswer(kept[:count], withdrawn, skipped)


def _same_system(a: str | None, b: str) -> bool:
    """``urn:oid:1.2.3`` and a bare ``1.2.3`` are one system (PID-3.4 often carries the bare OID)."""
    return (a or "").removeprefix("urn:oid:") == b.removeprefix("urn:oid:")


def _identifier_is(identifier, *, system: str, mrn: str) -> bool:
    return identifier is not None and identifier.value == mrn and _same_system(identifier.system, system)


def _is_patients(report, patients: dict, *, system: str, mrn: str) -> bool:
    """The report's subject is our patient: by the reference's identifier, else by the Patient the
    server included (``_include``); a subject we cannot check is dropped, never assumed."""
    subject = report.subject
    if subject is None:
        return False
    if subject.identifier is not None:
        return _identifier_is(subject.identifier, system=system, mrn=mrn)
    patient = patients.get(subject.reference or "")
    return patient is not None and any(
        _identifier_is(i, system=system, mrn=mrn) for i in patient.identifier or []
    )


def _is_radiology(report) -> bool:
    """No category: kept (the search asked for RAD already); one that names only other sections
    (a lab report) is not a radiology prior."""
    codings = [(c.system, c.code) for category in report.category or [] for c in category.coding or []]
    return not codings or any(coding in RADIOLOGY_CATEGORIES for coding in codings)


def _too_old(facts: FhirReportFacts, oldest: date) -> bool:
    when = facts.observed_at or facts.reported_at
    return when is not None and when.date() < oldest


def _facts(report, zone: ZoneInfo) -> FhirReportFacts | None:
    status = KEPT_STATUSES.get(report.status or "")
    text = _text(report)
    if status is None or not text:
        return None
    if len(text) > MAX_TEXT:
        log.warning("DiagnosticReport/%s: text of %s characters skipped", report.id, len(text))
        return None
    meta = report.meta
    version = (meta.versionId or (meta.lastUpdated.isoformat() if meta.lastUpdated else "")) if meta else ""
    coding = next(iter(report.code.coding or []), None) if report.code else None
    display = (report.code.text if report.code else None) or (coding.display if coding else "") or ""
    if coding is not None and (coding.system, coding.code) == GENERIC_REPORT_CODE:
        # a document type, not the exam: the report's own title says which exam it was
        display = next((f.title for f in report.presentedForm or [] if f.title), display)
    effective = report.effectiveDateTime or (report.effectivePeriod.start if report.effectivePeriod else None)
    return FhirReportFacts(
        fhir_id=report.id,
        fhir_version=str(version),
        result_status=status,
        accession_number=_accession(report),
        procedure_code=(coding.code if coding and coding.code else "") or "",
        procedure_text=display,
        observed_at=_instant(effective, zone),
        reported_at=_instant(report.issued, zone),
        radiologist_name=_reader(report),
        text=text,
    )


def _instant(value, zone: ZoneInfo) -> datetime | None:
    """A FHIR dateTime: an instant with its zone; a date alone is midnight at the facility."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=zone)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=zone)
    return None


def _accession(report) -> str:
    """identifier of type ACSN (v2-0203), else that of a basedOn reference; longer than DICOM's 16
    characters: left out (shown without one, never cut into another exam's number)."""
    identifiers = list(report.identifier or []) + [
        r.identifier for r in report.basedOn or [] if r.identifier is not None
    ]
    for identifier in identifiers:
        codes = {(c.system, c.code) for c in (identifier.type.coding or [] if identifier.type else [])}
        if (V2_0203, "ACSN") in codes and identifier.value:
            return identifier.value if len(identifier.value) <= 16 else ""
    return ""


def _reader(report) -> str:
    for reference in [*(report.resultsInterpreter or []), *(report.performer or [])]:
        if reference.display:
            return reference.display[:200]
    return ""


def _text(report) -> str:
    """presentedForm text/plain, else text/html as text, else the conclusion, else the narrative.
    An attachment given by ``url`` only is not fetched (a URL from the answer is not ours to call)."""
    forms = [f for f in report.presentedForm or [] if f.data]
    for wanted in ("text/plain", "text/html"):
        for form in forms:
            media, _, parameters = (form.contentType or "").partition(";")
            if media.strip().lower() != wanted:
                continue
            raw = _decoded(form.data)
            charset = re.search(r"charset=\"?([\w.-]+)", parameters or "")
            try:
                text = raw.decode(charset.group(1) if charset else "utf-8")
            except (LookupError, UnicodeDecodeError):
                continue
            text = html_text(text) if wanted == "text/html" else text
            if text.strip():
                return text.strip()
    if report.conclusion and report.conclusion.strip():
        return report.conclusion.strip()
    if report.text is not None and report.text.div:
        return html_text(report.text.div).strip()
    return ""


def _decoded(data) -> bytes:
    if isinstance(data, bytes):  # fhir.resources decodes base64Binary already
        return data
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return b""


class _TextOnly(HTMLParser):
    """The text of an HTML report: tags dropped (nothing of the markup reaches the reader's page,
    which shows it as escaped text), block elements as line breaks, script and style left out."""

    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "pre"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag, attrs) -> None:
        if tag in ("script", "style"):
            self.hidden += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag) -> None:
        if tag in ("script", "style"):
            self.hidden = max(0, self.hidden - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data) -> None:
        if not self.hidden:
            self.parts.append(data)


def html_text(markup: str) -> str:
    parser = _TextOnly()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
