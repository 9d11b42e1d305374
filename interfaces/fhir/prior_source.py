"""ReadRoom as a FHIR R4 client of a facility's report source (docs/priors.md, "FHIR DiagnosticReport
sources"): the hospital's own reports of the patient, asked by MRN *and* issuer, never by name, and
read into ``FhirReportFacts`` for ``imaging.report_history.fhir_reports_record``.

``GET [base]/DiagnosticReport?patient.identifier=<system>|<mrn>&category=…RAD&date=ge…&_sort=-date
&_count=N``. The Bundle is checked with ``fhir.resources`` (R4B, the models ReadRoom's own FHIR API is
built with) before anything is read from it: an answer that is not a Bundle fails the source, and
nothing of it is stored. Each DiagnosticReport is then checked again on our side, as QIDO-RS answers
are: its subject's identifier (or the included Patient's) must be the patient's MRN in the asked
system — a server that ignored the parameter never gives us another patient's report.

The searchset's next links are followed (at most ``MAX_PAGES``) until ``count`` reports are kept, and
a presentedForm given by ``url`` only is fetched (text, HTML, PDF; at most ``MAX_ATTACHMENT``): both
only on the source's own origin, the one its credentials are for — a next link elsewhere fails the
source, an attachment elsewhere is not called (the report says its text could not be fetched)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit
from zoneinfo import ZoneInfo

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from pydantic import ValidationError

from imaging.facts import FhirReportFacts
from imaging.prior_reports import pdf_bytes_text
from imaging.priors import DEFAULT_COUNT, DEFAULT_LOOKBACK_DAYS, SourceUnavailable
from interfaces.dicom.prior_web import origin, web_open
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
MAX_PAGES = 10  # searchset pages followed (link next) for one question
MAX_ATTACHMENT = 10 * 1024 * 1024  # bytes of one presentedForm fetched by its url
URL_FORMS = ("text/plain", "text/html", "application/pdf")  # fetched by url, in this preference


@dataclass(frozen=True)
class FhirAnswer:
    reports: list[FhirReportFacts]  # the patient's kept reports, newest exam first, at most ``count``
    withdrawn: list[str]  # ids the source now says are entered-in-error or cancelled
    skipped: int  # entries dropped: another patient, another category or status, no text
    unfetched: dict[str, str] = field(default_factory=dict)  # id → why its text could not be fetched
    pages: int = 1  # searchset pages read


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


def _timeout(source: dict) -> float:
    return float(source.get("timeout_seconds") or 30)


def _get(source: dict, url: str, accept: str, *, limit: int, what: str):
    """(body, Content-Type) of one GET with the source's credentials; ``url`` is on the source's
    origin (the callers check). Raises ``SourceUnavailable`` with a reason for the priors line."""
    response = web_open(source, url, accept, timeout=_timeout(source))
    try:
        with response:
            body = response.read(limit + 1)
            content_type = response.headers.get("Content-Type", "")
    except TimeoutError as exc:
        raise SourceUnavailable(f"no answer to {what} (timed out)") from exc
    except (ConnectionError, OSError) as exc:
        raise SourceUnavailable(f"connection lost mid-{what}") from exc
    if len(body) > limit:
        size = f"{limit // 2**20} MB" if limit >= 2**20 else f"{limit} bytes"
        raise SourceUnavailable(f"{what} is larger than {size}")
    return body, content_type


def _same_origin(source: dict, url: str, what: str) -> str:
    """``url`` if it is on the source's scheme, host and port: the source's credentials go there
    and nowhere else (a next link or an attachment elsewhere is refused, never called)."""
    if origin(url) != origin(source["base_url"]):
        raise SourceUnavailable(f"{what} is on another host ({urlsplit(url).netloc or url[:80]})")
    return url


def fhir_reports_find(source: dict, *, mrn: str, authority: str, zone: ZoneInfo, today: date) -> FhirAnswer:
    """The patient's radiology reports at the source, newest exam first (raises
    ``SourceUnavailable``: down, credentials refused, not a Bundle, a next page elsewhere).

    The searchset's ``link[next]`` is followed (at most ``MAX_PAGES``, on the source's origin only)
    until ``count`` reports are kept: entries we drop (another category, a status we do not keep)
    are made up from the next page. A server whose self link does not list ``_sort`` did not sort
    (the spec: the self link names the parameters applied) — ReadRoom's own pages by id — so then
    every page is read (up to ``MAX_PAGES``) and the newest exams are picked here."""
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
    judged = _Judged(system=system, mrn=mrn, zone=zone, oldest=oldest, count=count)
    try:
        pages = 0
        while url is not None and pages < MAX_PAGES:
            body, _ = _get(source, url, FHIR_JSON, limit=MAX_ANSWER, what="the search")
            bundle = _bundle(body)
            judged.add(bundle)  # this page's entries only: the earlier pages' are judged already
            pages += 1
            # enough would be kept so far (a url-only text counts; it is fetched once the pages are read)
            if _sorted(bundle) and judged.enough():
                break
            url = _next(bundle, source)
        if url is not None and pages == MAX_PAGES:
            log.warning("FHIR source %s: %s pages read, the rest left", source.get("name"), pages)
        answer = judged.answer(fetch=lambda form: _attachment_text(source, form))
    except SourceUnavailable as exc:  # the line names the source kind: "FHIR: authentication refused …"
        raise SourceUnavailable(f"FHIR: {exc}") from exc
    return FhirAnswer(answer.reports, answer.withdrawn, answer.skipped, answer.unfetched, pages)


def _bundle(body: bytes) -> Bundle:
    try:
        data = json.loads(body)
        if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
            raise ValueError("not a Bundle")
        return Bundle.model_validate(data)
    except (ValueError, ValidationError) as exc:  # JSONDecodeError is a ValueError
        raise SourceUnavailable("the answer is not a valid Bundle") from exc


def _link(bundle: Bundle, relation: str) -> str | None:
    return next((link.url for link in bundle.link or [] if link.relation == relation and link.url), None)


def _sorted(bundle: Bundle) -> bool:
    """The server says (in its self link) that it applied our ``_sort``."""
    self_url = _link(bundle, "self") or ""
    return any(key == "_sort" for key, _ in parse_qsl(urlsplit(self_url).query))


def _next(bundle: Bundle, source: dict) -> str | None:
    url = _link(bundle, "next")
    if url is None:
        return None
    # a relative next link is relative to the base (R4 §3.1.1.2 allows only absolute; be lenient)
    return _same_origin(source, urljoin(source["base_url"].rstrip("/") + "/", url), "the next page")


@dataclass
class _Candidate:
    """A report of our patient, of a kept status and category, in the lookback: judged once."""

    when: datetime  # the exam time (else issued); the oldest possible when it has neither
    order: int  # its place among the answer's reports: equal exam times keep the server's order
    report: DiagnosticReport
    facts: FhirReportFacts | None  # read without fetching anything; None: nothing to show
    pending: str  # "not asked": its text is a presentedForm given by url only, fetched if it is kept


class _Judged:
    """The searchset pages read so far, each entry judged once, when its page arrives: a sorted
    server's pages are read only until ``count`` would be kept, and asking after each page whether
    enough are kept must not judge the earlier pages again (that was quadratic in the pages).

    A report's id is judged once: a later page that repeats it (records move between pages) is
    ignored, the first copy counts. A report whose subject is only a reference to a Patient not yet
    included waits for that Patient on a later page (``_include`` may put it there); at the end, one
    still unresolved is dropped — a subject we cannot check is never assumed ours."""

    def __init__(self, *, system: str, mrn: str, zone: ZoneInfo, oldest: date, count: int) -> None:
        self.system, self.mrn, self.zone, self.oldest, self.count = system, mrn, zone, oldest, count
        self.patients: dict[str, object] = {}  # "Patient/<id>" → the included Patient
        self.seen: set[str | None] = set()
        self.waiting: list[tuple[int, DiagnosticReport]] = []  # subject's Patient not included yet
        self.candidates: list[_Candidate] = []
        self.withdrawn: list[str] = []
        self.skipped = 0
        self.showable = 0  # candidates with something to show (a url-only text counts)

    def add(self, bundle: Bundle) -> None:
        resources = [e.resource for e in bundle.entry or [] if e.resource is not None]
        for resource in resources:
            if resource.get_resource_type() == "Patient" and resource.id is not None:
                self.patients.setdefault(f"Patient/{resource.id}", resource)
        waiting, self.waiting = self.waiting, []
        for order, report in waiting:  # a Patient of this page may be the one they wait for
            self._judge(order, report)
        for report in (r for r in resources if r.get_resource_type() == "DiagnosticReport"):
            if report.id in self.seen:
                continue
            self.seen.add(report.id)
            self._judge(len(self.seen), report)

    def _judge(self, order: int, report: DiagnosticReport) -> None:
        subject = report.subject
        if (
            report.id and subject is not None and subject.identifier is None
            and (subject.reference or "") not in self.patients
        ):  # fmt: skip
            self.waiting.append((order, report))
            return
        if not report.id or not _is_patients(report, self.patients, system=self.system, mrn=self.mrn):
            self.skipped += 1
            return
        if report.status in WITHDRAWN_STATUSES:
            self.withdrawn.append(report.id)
            return
        if report.status not in KEPT_STATUSES or not _is_radiology(report):
            self.skipped += 1
            return
        when = _instant(_effective(report), self.zone) or _instant(report.issued, self.zone)
        if when is not None and when.date() < self.oldest:
            self.skipped += 1
            return
        text, pending = _report_text(report, None)  # pending: a url-only form, not asked yet
        facts = _facts(report, self.zone, text, pending)
        self.showable += facts is not None
        when = when or datetime.min.replace(tzinfo=self.zone)
        self.candidates.append(_Candidate(when, order, report, facts, pending))

    def enough(self) -> bool:
        return self.showable >= self.count

    def answer(self, fetch=None) -> FhirAnswer:
        """The kept reports, newest exam first, at most ``count``. ``fetch(form)`` gives the text of a
        presentedForm given by ``url`` (raises ``SourceUnavailable``): called for the kept reports
        only; without it such a form counts as text that could not be fetched."""
        skipped = self.skipped + len(self.waiting)  # a subject never included: not checked, dropped
        # the server may ignore _sort (ReadRoom's own pages by id): newest exam first here, whatever it did
        candidates = sorted(self.candidates, key=lambda c: c.order)
        candidates.sort(key=lambda c: c.when, reverse=True)
        kept, unfetched = [], {}
        for candidate in candidates:
            if len(kept) == self.count:
                break  # the attachments of reports not kept are never fetched
            facts, pending = candidate.facts, candidate.pending
            if pending and fetch is not None:
                text, pending = _report_text(candidate.report, fetch)
                facts = _facts(candidate.report, self.zone, text, pending)
            if facts is None:
                skipped += 1
                continue
            kept.append(facts)
            if pending:
                unfetched[candidate.report.id] = pending
        return FhirAnswer(kept, list(self.withdrawn), skipped, unfetched)


def _answer(
    bundles, *, system: str, mrn: str, zone: ZoneInfo, oldest: date, count: int, fetch=None
) -> FhirAnswer:
    """The kept reports of the pages read (a Bundle or a list of them); see ``_Judged.answer``."""
    judged = _Judged(system=system, mrn=mrn, zone=zone, oldest=oldest, count=count)
    for bundle in bundles if isinstance(bundles, list) else [bundles]:
        judged.add(bundle)
    return judged.answer(fetch)


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


def _effective(report):
    return report.effectiveDateTime or (report.effectivePeriod.start if report.effectivePeriod else None)


def _facts(report, zone: ZoneInfo, text: str, pending: str) -> FhirReportFacts | None:
    status = KEPT_STATUSES.get(report.status or "")
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
    return FhirReportFacts(
        fhir_id=report.id,
        fhir_version=str(version),
        result_status=status,
        accession_number=_accession(report),
        procedure_code=(coding.code if coding and coding.code else "") or "",
        procedure_text=display,
        observed_at=_instant(_effective(report), zone),
        reported_at=_instant(report.issued, zone),
        radiologist_name=_reader(report),
        text=text,
        text_pending=bool(pending),
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


def _media(content_type: str | None) -> tuple[str, str]:
    media, _, parameters = (content_type or "").partition(";")
    return media.strip().lower(), parameters


def _decode_text(raw: bytes, media: str, parameters: str) -> str:
    """text/plain in its charset (UTF-8 when none), text/html as text, a PDF's text; "" when it
    cannot be read."""
    if media == "application/pdf":
        try:
            return pdf_bytes_text(raw)
        except ValueError:
            return ""
    charset = re.search(r"charset=\"?([\w.-]+)", parameters or "")
    try:
        text = raw.decode(charset.group(1) if charset else "utf-8")
    except (LookupError, UnicodeDecodeError):
        return ""
    return (html_text(text) if media == "text/html" else text).strip()


def _inline_text(report) -> str:
    """presentedForm data: text/plain, else text/html as text."""
    forms = [f for f in report.presentedForm or [] if f.data]
    for wanted in ("text/plain", "text/html"):
        for form in forms:
            media, parameters = _media(form.contentType)
            if media == wanted and (text := _decode_text(_decoded(form.data), media, parameters)):
                return text
    return ""


def _url_forms(report) -> list:
    """presentedForms given by ``url`` only that we can read, text/plain first, then HTML, then PDF."""
    forms = [f for f in report.presentedForm or [] if f.url and not f.data]
    ranked = [(URL_FORMS.index(_media(f.contentType)[0]), i, f) for i, f in enumerate(forms)
              if _media(f.contentType)[0] in URL_FORMS]  # fmt: skip
    return [f for *_, f in sorted(ranked, key=lambda r: (r[0], r[1]))]


def _fallback_text(report) -> str:
    """The conclusion, else the narrative."""
    if report.conclusion and report.conclusion.strip():
        return report.conclusion.strip()
    if report.text is not None and report.text.div:
        return html_text(report.text.div).strip()
    return ""


def _report_text(report, fetch) -> tuple[str, str]:
    """(text, why its attachment could not be fetched or ""): inline presentedForm text, else the
    text of a form given by ``url`` (fetched with the source's credentials, on its origin only),
    else the conclusion, else the narrative. A url form whose fetch fails keeps the report, its text
    saying so (with the conclusion, if any), and the reason is the source's failure: the task asks
    again and the text replaces the note."""
    if text := _inline_text(report):
        return text, ""
    reason = ""
    for form in _url_forms(report):
        try:
            if fetch is None:
                raise SourceUnavailable("not asked")
            if text := fetch(form):
                return text, ""
            reason = reason or "the attachment holds no readable text"
        except SourceUnavailable as exc:
            reason = reason or str(exc)
    if reason:
        note = f"(the report's text could not be fetched: {reason})"
        fallback = _fallback_text(report)
        return (f"{note}\n\n{fallback}" if fallback else note), reason
    return _fallback_text(report), ""


def _attachment_text(source: dict, form) -> str:
    """A presentedForm given by ``url``: GET it with the source's credentials if it is on the
    source's origin (a relative url is relative to the base), ``Accept`` its contentType, at most
    ``MAX_ATTACHMENT`` bytes, the source's timeout. A server may answer a Binary resource in JSON
    instead of the raw content; its data is read then."""
    url = _same_origin(source, urljoin(source["base_url"].rstrip("/") + "/", form.url), "its attachment")
    media, parameters = _media(form.contentType)
    accept = f"{form.contentType}, {FHIR_JSON};q=0.5"
    body, answered = _get(source, url, accept, limit=MAX_ATTACHMENT, what="the attachment")
    answered_media, answered_parameters = _media(answered)
    if answered_media in (FHIR_JSON, "application/json"):
        try:
            binary = json.loads(body)
            if not isinstance(binary, dict) or binary.get("resourceType") != "Binary":
                raise ValueError("not a Binary")
            raw = base64.b64decode(binary.get("data") or "", validate=True)
        except (ValueError, binascii.Error) as exc:
            raise SourceUnavailable("the attachment is not its content nor a Binary") from exc
        media, parameters = _media(binary.get("contentType") or form.contentType)
        return _decode_text(raw, media, parameters)
    if answered_media and answered_media != media:
        raise SourceUnavailable(f"the attachment is {answered_media}, not {media}")
    return _decode_text(body, media, answered_parameters or parameters)


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
