"""The hospital's own reports of fetched priors (docs/priors.md, "Prior reports from the PACS"): a
prior retrieved from a facility's PACS often carries its report as a DICOM object of the same study —
a text SR (Basic Text / Enhanced / Comprehensive SR) or an Encapsulated PDF. The reading screen shows
their text read-only beside the prior, next to the reports ReadRoom signed.

Read on demand from the encrypted store (a prior has a handful of such objects, and nothing needs to be
kept twice); every prior whose document is shown is an audited read."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO

from django.db.models import F
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from accounts.audit import ReadKind, record_phi_access
from imaging.models import HistoricalReport, Instance, PriorState, Study
from imaging.selectors import study_priors
from imaging.storage import StorageError, encrypted_read

log = logging.getLogger(__name__)

TEXT_SR_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.11": "SR",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22": "SR",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33": "SR",  # Comprehensive SR
}
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
DOCUMENT_CLASSES = {**TEXT_SR_CLASSES, ENCAPSULATED_PDF: "PDF"}
MAX_DOCUMENTS = 10
MAX_TEXT = 20_000  # characters shown of one document: a report, not a book
HISTORY_STATUS = {"F": "Final", "C": "Corrected", "A": "Amended", "P": "Preliminary (not final)"}


@dataclass(frozen=True)
class EarlierVersion:
    """A version of a historical report that a later one replaced: still shown, marked so."""

    label: str  # "Final, received 2026-03-02"
    text: str


@dataclass(frozen=True)
class PriorDocument:
    """One report of a prior as the reading screen shows it: an object of a retrieved prior (SR,
    PDF), or a report of the hospital's history that its RIS sent (kind "report", no study here
    needed)."""

    study: Study | None
    kind: str  # "SR" | "PDF" | "report"
    title: str
    text: str
    source: str = "from the PACS"
    description: str = ""
    on: datetime | None = None
    reader: str = ""
    earlier: tuple[EarlierVersion, ...] = ()


def prior_documents(user, study: Study) -> list[PriorDocument]:
    """The hospital's reports of the patient's priors that ``user`` may see beside ``study`` (the
    caller checked the study): the report objects (text SR, Encapsulated PDF) of the *retrieved*
    priors, newest prior first — a prior still retrieving is hidden here as everywhere — then the
    reports its RIS sent as history or its FHIR source gave (``imaging.report_history``), newest
    exam first."""
    return _pacs_documents(user, study) + historical_documents(study)


def historical_documents(study: Study) -> list[PriorDocument]:
    """The patient's reports from the facility's RIS history, other than this study's own, each its
    shown version with the versions it replaced. The patient is one facility's (never matched
    across facilities), so another facility's history cannot appear."""
    if study.patient_id is None:
        return []
    shown = list(
        HistoricalReport.objects.filter(
            facility_id=study.facility_id, patient_id=study.patient_id, superseded_at__isnull=True
        )
        .exclude(accession_number__in=[study.accession_number] if study.accession_number else [])
        .exclude(study_id=study.pk)  # its own report, linked by the UID the RIS sent
        .order_by(F("observed_at").desc(nulls_last=True), "-pk")[:MAX_DOCUMENTS]
    )
    documents = []
    for report in shown:
        text = _history_text(report)
        earlier = []
        replaced = report.supersedes
        while replaced is not None:
            received = replaced.received_at.astimezone(study.facility.zone)
            label = f"Replaced: {HISTORY_STATUS[replaced.result_status]}, received {received:%Y-%m-%d %H:%M}"
            earlier.append(EarlierVersion(label, _history_text(replaced)))
            replaced = replaced.supersedes
        title = f"{HISTORY_STATUS[report.result_status]} report"
        if earlier:
            title += f", replaces {len(earlier)} earlier version{'s' if len(earlier) > 1 else ''}"
        documents.append(
            PriorDocument(
                study=report.study,
                kind="report",
                title=title,
                text=text[:MAX_TEXT],
                source=f"from FHIR, {report.source}" if report.fhir_id else f"from the RIS, {report.source}",
                description=" · ".join(
                    filter(None, [report.procedure_text or report.procedure_code, report.accession_number])
                ),
                on=report.observed_at or report.reported_at,
                reader=report.radiologist_name,
                earlier=tuple(earlier),
            )
        )
        record_phi_access(report, kind=ReadKind.PRIORS)
    return documents


def _history_text(report: HistoricalReport) -> str:
    try:
        return encrypted_read(report.storage_path).decode()[:MAX_TEXT]
    except (StorageError, UnicodeDecodeError) as exc:
        log.warning("historical report %s unreadable: %s", report.pk, exc)
        return "(this report could not be read)"


def _pacs_documents(user, study: Study) -> list[PriorDocument]:
    priors = [p for p in study_priors(user, study) if p.prior_state == PriorState.RETRIEVED]
    if not priors:
        return []
    by_study = {p.pk: p for p in priors}
    instances = Instance.objects.filter(
        series__study_id__in=by_study, sop_class_uid__in=DOCUMENT_CLASSES
    ).values_list("series__study_id", "sop_class_uid", "storage_path")
    order = {p.pk: n for n, p in enumerate(priors)}
    documents = []
    for study_id, sop_class, path in sorted(instances, key=lambda row: order[row[0]])[:MAX_DOCUMENTS]:
        prior = by_study[study_id]
        kind = DOCUMENT_CLASSES[sop_class]
        try:
            ds = dcmread(BytesIO(encrypted_read(path)))
            text = pdf_text(ds) if kind == "PDF" else sr_text(ds)
            title = str(ds.get("DocumentTitle", "")) if kind == "PDF" else _sr_title(ds)
        except (StorageError, InvalidDicomError, ValueError, AttributeError, KeyError) as exc:
            # one unreadable object must not hide the others, nor the reading screen
            log.warning("prior report %s unreadable: %s", path, exc)
            text, title = "(this report could not be read)", ""
        documents.append(
            PriorDocument(
                prior,
                kind,
                title or "Report",
                text[:MAX_TEXT],
                description=prior.description,
                on=prior.study_datetime,
            )
        )
    for prior in {d.study for d in documents}:
        record_phi_access(prior, kind=ReadKind.PRIORS)
    return documents


def sr_text(ds: Dataset) -> str:
    """The SR's content tree as lines: a container is a heading, TEXT/CODE/NUM/DATE items are
    "name: value" (a radiology report SR is mostly TEXT items under Findings / Impression)."""
    lines: list[str] = []
    _sr_walk(ds.get("ContentSequence", []), lines)
    return "\n".join(lines).strip()


def _sr_walk(items, lines: list[str]) -> None:
    for item in items:
        name = _concept(item)
        kind = item.get("ValueType", "")
        if kind == "CONTAINER":
            if name:
                lines.append(("" if not lines else "\n") + name.upper())
        elif kind == "TEXT":
            value = str(item.get("TextValue", ""))
            lines.append(f"{name}: {value}" if name and "\n" not in value else value)
        elif kind == "CODE" and item.get("ConceptCodeSequence"):
            lines.append(f"{name}: {item.ConceptCodeSequence[0].CodeMeaning}")
        elif kind == "NUM" and item.get("MeasuredValueSequence"):
            measured = item.MeasuredValueSequence[0]
            unit = (
                measured.MeasurementUnitsCodeSequence[0].CodeValue
                if "MeasurementUnitsCodeSequence" in measured
                else ""
            )
            lines.append(f"{name}: {measured.NumericValue} {unit}".rstrip())
        elif kind in ("DATE", "DATETIME", "PNAME", "UIDREF"):
            value = item.get(
                {"DATE": "Date", "DATETIME": "DateTime", "PNAME": "PersonName"}.get(kind, "UID"), ""
            )
            lines.append(f"{name}: {value}")
        _sr_walk(item.get("ContentSequence", []), lines)


def _concept(item: Dataset) -> str:
    names = item.get("ConceptNameCodeSequence")
    return str(names[0].CodeMeaning) if names else ""


def _sr_title(ds: Dataset) -> str:
    return _concept(ds) or str(ds.get("SeriesDescription", ""))


def pdf_text(ds: Dataset) -> str:
    """The text of an Encapsulated PDF (pypdf: pure Python, already what the tests read our own
    report PDFs with; shown as text, so no PDF renderer runs in the reader's page)."""
    return pdf_bytes_text(bytes(ds.EncapsulatedDocument))


def pdf_bytes_text(document: bytes) -> str:
    """The text of a PDF's pages (an Encapsulated PDF's document, a FHIR presentedForm); raises
    ``ValueError`` for one pypdf cannot read."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(BytesIO(document))
        return "\n".join((page.extract_text() or "").strip() for page in reader.pages).strip()
    except (PdfReadError, ValueError, KeyError) as exc:
        raise ValueError(f"PDF unreadable: {exc}") from exc
