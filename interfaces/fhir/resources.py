"""FHIR R4 resources as JSON dicts — Patient, ServiceRequest, ImagingStudy, DiagnosticReport — each
validated by constructing the fhir.resources model before it leaves (STANDARDS.md §2).

fhir.resources 8.x models FHIR R5 at its top level and ships ``R4B`` (FHIR 4.3.0) and ``STU3``, no
4.0.1 package. R4B is the R4 technical correction, and every element written here exists in R4 4.0.1
with the same type, cardinality and value set, so ``fhir.resources.R4B`` is the validator for the R4
endpoints (docs/delivery.md).

One function per resource (``patient_resource``, ``service_request_resource``,
``imaging_study_resource``, ``diagnostic_report_resource``) maps everything ReadRoom knows about the
record; docs/api.md has the mapping table."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from django.utils.module_loading import import_string

from facilities.models import Facility, PriorityClass
from imaging.models import Order, OrderStatus, Patient, Sex, Study, StudyStatus
from interfaces.fhir.identifiers import (
    DICOM_UID,
    NPI,
    V2_0203,
    dicom_uid_value,
    facility_system,
    is_npi_authority,
    patient_id_system,
)

DCM = "http://dicom.nema.org/resources/ontology/DCM"  # DICOM modality codes (CID 29)
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"  # diagnostic service section: RAD
V3_OBSERVATION_VALUE = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"  # SUBSETTED
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
CPT = "http://www.ama-assn.org/go/cpt"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"
FACILITY_CODES = "urn:readroom:facility"
# Coding-system names as HL7 v2 senders write them (table 0396 and common variants), upper case
# without "-", "_" or spaces → FHIR system URIs. US senders mean ICD-10-CM by "I10".
CODING_SYSTEMS = {
    **dict.fromkeys(("C4", "CPT", "CPT4"), CPT),
    **dict.fromkeys(("LN", "LOINC"), LOINC),
    **dict.fromkeys(("I10", "I10C", "ICD10", "ICD10CM"), ICD10CM),
    **dict.fromkeys(("I9", "I9C", "ICD9", "ICD9CM"), ICD9CM),
    **dict.fromkeys(("SCT", "SNOMEDCT", "SNOMED"), SNOMED),
}
IMAGING_REPORT = ("18748-4", "Diagnostic imaging study")
REPORT_STATUSES = {"preliminary", "final", "amended", "corrected", "appended", "entered-in-error"}
# HL7 v2 table 0001 → FHIR administrative-gender (the v2-to-FHIR concept map: A and O → other,
# N → unknown).
GENDER = {
    Sex.FEMALE: "female",
    Sex.MALE: "male",
    Sex.OTHER: "other",
    Sex.AMBIGUOUS: "other",
    Sex.UNKNOWN: "unknown",
    Sex.NOT_APPLICABLE: "unknown",
}
# Turnaround classes → FHIR request-priority. Stroke and trauma are read at once: stat.
REQUEST_PRIORITY = {
    PriorityClass.STROKE: "stat",
    PriorityClass.TRAUMA: "stat",
    PriorityClass.STAT: "stat",
    PriorityClass.ASAP: "asap",
    PriorityClass.ROUTINE: "routine",
}
REVOKED_ORDER_STATUSES = (OrderStatus.CANCELLED, OrderStatus.DISCONTINUED)
IMAGING_CATEGORY = {"coding": [{"system": SNOMED, "code": "363679005", "display": "Imaging"}]}


def coding_system_uri(name: str) -> str | None:
    return CODING_SYSTEMS.get(re.sub(r"[\s_-]", "", name.upper()))


# --- Patient -------------------------------------------------------------------------------------


def patient_resource(patient: Patient) -> dict:
    """PID-3 (with its assigning authority as the system), PID-5, PID-7, PID-8; a patient merged by
    ADT^A40 is inactive and ``replaced-by`` the surviving one (``merged_from`` prefetched or not)."""
    links = [
        {"other": {"reference": f"Patient/{prior.pk}"}, "type": "replaces"}
        for prior in patient.merged_from.all()
    ]
    if patient.merged_into_id:
        links.append({"other": {"reference": f"Patient/{patient.merged_into_id}"}, "type": "replaced-by"})
    resource = {
        "resourceType": "Patient",
        "id": str(patient.pk),
        "meta": {"lastUpdated": _instant(patient.updated_at)},
        "identifier": [mrn_identifier(patient)],
        "active": patient.merged_into_id is None,
        "name": [
            {
                "use": "official",
                "family": patient.family_name,
                "given": [patient.given_name, patient.middle_name],
            }
        ],
        "gender": GENDER.get(patient.sex, "unknown"),
        "birthDate": patient.birth_date.isoformat() if patient.birth_date else None,
        "managingOrganization": facility_reference(patient.facility),
        "link": links,
    }
    return validated(r4b_model("patient.Patient"), resource)


def mrn_identifier(patient: Patient) -> dict:
    identifier = _typed("MR", patient.mrn)
    identifier["system"] = patient_id_system(patient.facility.code, patient.assigning_authority)
    identifier["assigner"] = {"display": patient.assigning_authority}
    return identifier


def patient_reference(patient: Patient | None) -> dict:
    """The Patient resource, with the MRN and the name for a reader that does not follow it."""
    if patient is None:
        return {"display": "Unmatched patient (images received before their order)"}
    return {
        "reference": f"Patient/{patient.pk}",
        "type": "Patient",
        "identifier": mrn_identifier(patient),
        "display": patient.display_name,
    }


def facility_reference(facility: Facility) -> dict:
    return {"identifier": {"system": FACILITY_CODES, "value": facility.code}, "display": facility.name}


# --- ServiceRequest ------------------------------------------------------------------------------


def service_request_status(order_status: str, *, read_final: bool) -> str:
    """revoked: cancelled or discontinued (ORC-1 CA/DC); completed: the RIS says the exam is done
    (ORC-5 CM) or ReadRoom's final read is signed; otherwise active. (``searches.service_request_
    status_q`` is the same rule in SQL.)"""
    if order_status in REVOKED_ORDER_STATUSES:
        return "revoked"
    if order_status == OrderStatus.COMPLETED or read_final:
        return "completed"
    return "active"


def service_request_resource(order: Order, *, read_final: bool) -> dict:
    """The order as the hospital sent it. ``read_final``: a study of the order has its final read.

    reasonCode: every OBR-31 (``reason_codes``); note: OBR-13, then each NTE note (docs/orders.md)."""
    resource = {
        "resourceType": "ServiceRequest",
        "id": str(order.pk),
        "meta": {"lastUpdated": _instant(order.updated_at)},
        "identifier": order_identifiers(order),
        "status": service_request_status(order.status, read_final=read_final),
        "intent": "order",
        "category": [IMAGING_CATEGORY],
        "priority": REQUEST_PRIORITY.get(order.priority, "routine"),
        "code": _procedure(order),
        "subject": patient_reference(order.patient),
        "authoredOn": _instant(order.ordered_at),
        "occurrenceDateTime": _instant(order.scheduled_at),
        "requester": ordering_provider_reference(order),
        "reasonCode": reason_codes(order),
        "note": order_notes(order),
    }
    return validated(r4b_model("servicerequest.ServiceRequest"), resource)


def order_notes(order: Order) -> list[dict]:
    """ServiceRequest.note: OBR-13 relevant clinical information, then the order's NTE notes."""
    texts = [order.clinical_information, *(order.notes or [])]
    return [{"text": text} for text in texts if text]


def order_identifiers(order: Order) -> list[dict]:
    """Accession (ACSN), placer (PLAC, ORC-2) and filler (FILL, ORC-3) numbers, each in its facility's
    namespace."""
    code = order.facility.code
    identifiers = _accession(order.accession_number, order.facility)
    for kind, type_code, value in (
        ("placer", "PLAC", order.placer_order_number),
        ("filler", "FILL", order.filler_order_number),
    ):
        if value:
            identifiers.append({**_typed(type_code, value), "system": facility_system(code, kind)})
    return identifiers


def ordering_provider_reference(order: Order) -> dict | None:
    """ORC-12 / OBR-16: the display name, and the provider's id — as an NPI identifier when XCN.9
    names the NPI registry."""
    xcn = order.ordering_provider_xcn or {}
    provider_id = xcn.get("id") or order.ordering_provider_id
    if not (provider_id or order.ordering_provider_name):
        return None
    reference: dict = {"type": "Practitioner", "display": order.ordering_provider_name}
    authority = xcn.get("authority", "")
    if provider_id and is_npi_authority(authority):
        reference["identifier"] = {**_typed("NPI", provider_id), "system": NPI}
    elif provider_id:
        reference["identifier"] = {"value": provider_id, "assigner": {"display": authority}}
    return reference


def reason_codes(order: Order) -> list[dict]:
    """The reason for study: one CodeableConcept per OBR-31 repetition (``reason_code``); an order
    stored before every repetition was kept has only its one ``reason`` text."""
    reasons = order.reasons_for_study or []
    if reasons:
        return [
            reason_code(code=r.get("code", ""), text=r.get("text", ""), system=r.get("system", ""))
            for r in reasons
        ]
    return [reason_code(text=order.reason)] if order.reason else []


def reason_code(*, text: str, code: str = "", system: str = "") -> dict:
    """One OBR-31 repetition (CWE: code ^ text ^ coding system) as a CodeableConcept; ICD-10 codes
    get the ICD-10-CM system URI."""
    concept: dict = {"text": text or code}
    if code:
        coding = {"code": code, **({"display": text} if text else {})}
        if uri := coding_system_uri(system):
            coding["system"] = uri
        concept["coding"] = [coding]
    return concept


# --- ImagingStudy --------------------------------------------------------------------------------


def imaging_study_resource(study: Study) -> dict:
    """ImagingStudy for one study with its series (``study`` fetched through ``access_study``)."""
    order = study.order
    resource = {
        "resourceType": "ImagingStudy",
        "id": str(study.pk),
        "meta": {"lastUpdated": _instant(study.updated_at)},
        "identifier": [
            {"system": DICOM_UID, "value": dicom_uid_value(study.study_instance_uid)},
            *_accession(study.accession_number, study.facility),
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
        resource["basedOn"] = [service_request_reference(order)]
        resource["procedureCode"] = [_procedure(order)]
        resource["referrer"] = ordering_provider_reference(order)
        resource["reasonCode"] = reason_codes(order)
    return validated(r4b_model("imagingstudy.ImagingStudy"), resource)


def imaging_study_reference(study_id: int) -> dict:
    return {"reference": f"ImagingStudy/{study_id}"}


def service_request_reference(order: Order) -> dict:
    reference = {"reference": f"ServiceRequest/{order.pk}", "type": "ServiceRequest"}
    if order.placer_order_number:
        reference["identifier"] = {
            **_typed("PLAC", order.placer_order_number),
            "system": facility_system(order.facility.code, "placer"),
        }
    return reference


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
    if system := coding_system_uri(order.procedure_coding_system):
        coding["system"] = system
    return {"coding": [coding], "text": order.procedure_text or None}


def _accession(accession: str, facility: Facility) -> list[dict]:
    if not accession:
        return []
    identifier = _typed("ACSN", accession)
    identifier["system"] = facility_system(facility.code, "accession")
    identifier["assigner"] = {"display": facility.name}
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
    # True in search results: the PDF is left out (rendering one per entry would make a page of 50
    # take minutes); the resource says so with the SUBSETTED tag, and a read returns it whole.
    subsetted: bool = False


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
        "meta": {
            "tag": [{"system": V3_OBSERVATION_VALUE, "code": "SUBSETTED"}] if snapshot.subsetted else []
        },
        "identifier": _accession(study.accession_number, study.facility),
        "basedOn": [service_request_reference(study.order)] if study.order_id else [],
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
    return validated(r4b_model("diagnosticreport.DiagnosticReport"), resource)


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
    """An instant as FHIR JSON writes it: UTC with "Z"."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value is not None else None


def r4b_model(name: str) -> type:
    """The fhir.resources R4B model ``"<module>.<Class>"``, imported on first use: its pydantic models
    cost ~0.4 s of CPU to import, which every process's ``django.setup()`` paid through the FHIRcast
    receivers (a manage.py command, the listener, the SCP) whether or not it ever built a resource."""
    return import_string(f"fhir.resources.R4B.{name}")


def validated(model, resource: dict) -> dict:
    """The resource without the empty elements FHIR forbids, once the fhir.resources model has been
    built from it (pydantic's ValidationError on anything invalid). The checked dict itself is what
    is sent: dumping the model back costs more than validating it (3.2 against 2.4 ms for an order),
    and every value in it is already JSON."""
    pruned = _pruned(resource)
    model.model_validate(pruned)
    return pruned


def _pruned(value):
    """FHIR forbids empty strings, lists and objects: drop them (and None) recursively."""
    if isinstance(value, dict):
        pruned = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        return [p for p in (_pruned(v) for v in value) if p not in (None, "", [], {})]
    return value
