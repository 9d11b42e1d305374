"""FHIR R4 ImagingStudy and DiagnosticReport as JSON dicts, each validated by constructing the
fhir.resources model before it leaves (STANDARDS.md §2).

fhir.resources 8.x models FHIR R5 at its top level and ships ``R4B`` (FHIR 4.3.0) and ``STU3``, no
4.0.1 package. R4B is the R4 technical correction, and every element written here exists in R4 4.0.1
with the same type, cardinality and value set, so ``fhir.resources.R4B`` is the validator for the R4
endpoints (docs/delivery.md)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.imagingstudy import ImagingStudy

from imaging.models import Order, Patient, Study, StudyStatus

DICOM_UID = "urn:dicom:uid"
DCM = "http://dicom.nema.org/resources/ontology/DCM"  # DICOM modality codes (CID 29)
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"  # identifier types: MR, ACSN, PLAC, NPI
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"  # diagnostic service section: RAD
LOINC = "http://loinc.org"
NPI = "http://hl7.org/fhir/sid/us-npi"
CODING_SYSTEMS = {
    "C4": "http://www.ama-assn.org/go/cpt",
    "CPT": "http://www.ama-assn.org/go/cpt",
    "LN": LOINC,
}
IMAGING_REPORT = ("18748-4", "Diagnostic imaging study")
REPORT_STATUSES = {"preliminary", "final", "amended", "corrected", "appended", "entered-in-error"}


# --- ImagingStudy --------------------------------------------------------------------------------


def imaging_study_resource(study: Study) -> dict:
    """ImagingStudy for one study with its series (``study`` fetched through ``access_study``)."""
    order = study.order
    resource = {
        "resourceType": "ImagingStudy",
        "id": str(study.pk),
        "identifier": [
            {"system": DICOM_UID, "value": f"urn:oid:{study.study_instance_uid}"},
            *_accession(study.accession_number, study.facility.name),
        ],
        "status": _study_status(study),
        "modality": [_modality(m) for m in _modalities(study)],
        "subject": patient_reference(study.patient),
        "started": _instant(study.study_datetime),
        "numberOfSeries": study.number_of_series,
        "numberOfInstances": study.number_of_instances,
        "description": study.description or None,
        "series": [_series(series) for series in study.series.all()],
    }
    if order is not None:
        resource["basedOn"] = [{"identifier": _typed("PLAC", order.placer_order_number)}]
        resource["procedureCode"] = [_procedure(order)]
        if order.ordering_provider_name:
            resource["referrer"] = {"display": order.ordering_provider_name}
        if order.reason:
            resource["reasonCode"] = [{"text": order.reason}]
    return _validated(ImagingStudy, resource)


def imaging_study_reference(study_id: int) -> dict:
    return {"reference": f"ImagingStudy/{study_id}"}


def patient_reference(patient: Patient | None) -> dict:
    """A logical reference by MRN (ReadRoom serves no Patient resource): the MRN typed MR, its
    assigning authority as the assigner, the name as display."""
    if patient is None:
        return {"display": "Unmatched patient (images received before their order)"}
    identifier = _typed("MR", patient.mrn)
    identifier["assigner"] = {"display": patient.assigning_authority}
    return {"identifier": identifier, "display": patient.display_name}


def _study_status(study: Study) -> str:
    if study.status == StudyStatus.CANCELLED:
        return "cancelled"
    if study.status == StudyStatus.RECEIVING and not study.number_of_instances:
        return "registered"  # ordered/announced, nothing viewable yet
    return "available"


def _modalities(study: Study) -> list[str]:
    listed = [m for m in study.modalities.split("\\") if m]
    return listed or sorted({s.modality for s in study.series.all() if s.modality})


def _modality(code: str) -> dict:
    return {"system": DCM, "code": code}


def _series(series) -> dict:
    return {
        "uid": series.series_instance_uid,
        "number": series.series_number,
        "modality": _modality(series.modality or "OT"),  # 1..1 in R4; OT = other
        "description": series.description or None,
        "numberOfInstances": series.number_of_instances,
        "started": _instant(series.first_received_at),
    }


def _procedure(order: Order) -> dict:
    coding = {"code": order.procedure_code, "display": order.procedure_text or None}
    if system := CODING_SYSTEMS.get(order.procedure_coding_system.upper()):
        coding["system"] = system
    return {"coding": [coding], "text": order.procedure_text or None}


def _accession(accession: str, assigner: str) -> list[dict]:
    if not accession:
        return []
    identifier = _typed("ACSN", accession)
    identifier["assigner"] = {"display": assigner}
    return [identifier]


def _typed(code: str, value: str) -> dict:
    return {"type": {"coding": [{"system": V2_0203, "code": code}]}, "value": value}


# --- DiagnosticReport ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportAuthor:
    display: str  # "Nadia Neuro, MD"
    npi: str = ""


@dataclass(frozen=True)
class DiagnosticReportSnapshot:
    """What a DiagnosticReport says about one report version (the reports app fills it)."""

    id: str
    status: str  # preliminary | final | amended (an addended final) | corrected | appended
    study: Study  # the imaging study reported on (subject, accession, ImagingStudy reference)
    effective_at: datetime | None  # the exam time
    issued: datetime  # signature time of this version
    performer: ReportAuthor  # the signing radiologist
    conclusion: str  # the impression
    text: str  # the whole report as plain text (presentedForm text/plain)
    title: str  # e.g. "CT HEAD WO CONTRAST — final report"
    pdf: bytes | None = None  # the signed PDF (presentedForm application/pdf)
    code: tuple[str, str, str] = (LOINC, *IMAGING_REPORT)  # (system, code, display)


def diagnostic_report_resource(snapshot: DiagnosticReportSnapshot) -> dict:
    if snapshot.status not in REPORT_STATUSES:
        raise ValueError(f"DiagnosticReport.status {snapshot.status!r} is not one ReadRoom sends")
    study, (system, code, display) = snapshot.study, snapshot.code
    performer = {"display": snapshot.performer.display}
    if snapshot.performer.npi:
        performer["identifier"] = {"system": NPI, "value": snapshot.performer.npi}
    resource = {
        "resourceType": "DiagnosticReport",
        "id": snapshot.id,
        "identifier": _accession(study.accession_number, study.facility.name),
        "status": snapshot.status,
        "category": [{"coding": [{"system": V2_0074, "code": "RAD", "display": "Radiology"}]}],
        "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
        "subject": patient_reference(study.patient),
        "effectiveDateTime": _instant(snapshot.effective_at),
        "issued": _instant(snapshot.issued),
        "performer": [performer],
        "resultsInterpreter": [performer],
        "imagingStudy": [imaging_study_reference(study.pk)],
        "conclusion": snapshot.conclusion or None,
        "presentedForm": _presented_forms(snapshot),
    }
    return _validated(DiagnosticReport, resource)


def _presented_forms(snapshot: DiagnosticReportSnapshot) -> list[dict]:
    forms = [_attachment("text/plain; charset=utf-8", snapshot.text.encode("utf-8"), snapshot)]
    if snapshot.pdf:
        forms.append(_attachment("application/pdf", snapshot.pdf, snapshot))
    return forms


def _attachment(content_type: str, data: bytes, snapshot: DiagnosticReportSnapshot) -> dict:
    return {
        "contentType": content_type,
        "language": "en-US",
        "data": base64.b64encode(data).decode("ascii"),
        "title": snapshot.title,
        "creation": _instant(snapshot.issued),
    }


# --- shared --------------------------------------------------------------------------------------


def _instant(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _validated(model, resource: dict) -> dict:
    """Build the fhir.resources model (raises pydantic's ValidationError on anything invalid) and
    return its JSON form, without the empty elements FHIR forbids."""
    return model.model_validate(_pruned(resource)).model_dump(mode="json", exclude_none=True)


def _pruned(value):
    """FHIR forbids empty strings, lists and objects: drop them (and None) recursively."""
    if isinstance(value, dict):
        pruned = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        return [p for p in (_pruned(v) for v in value) if p not in (None, "", [], {})]
    return value
