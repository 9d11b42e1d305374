"""What the edges learn from a message or an image, as plain data.

Protocol code (interfaces/hl7, interfaces/dicom) turns bytes into these; imaging.services applies
them to the database. Nothing here touches a socket or the ORM."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Final, TypeVar

T = TypeVar("T")


class _Clear:
    """HL7 v2's ``""`` (two double quotes): "delete the stored value" (v2.5.1 Ch. 2.5.3)."""

    _instance: _Clear | None = None

    def __new__(cls) -> _Clear:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "CLEAR"

    def __reduce__(self):  # one instance across pickling (Celery, copies)
        return (_Clear, ())


CLEAR: Final = _Clear()
# What a message says about one stored value: None = the field was empty (leave the value alone),
# CLEAR = it was ``""`` (delete it), anything else = the new value.
Sent = T | None | _Clear


def hl7_update(stored: T, sent: Sent, *, cleared: T = "") -> T:  # type: ignore[assignment]
    """THE rule for every field an order or patient message updates (HL7 v2.5.1 Ch. 2.5.3): an
    empty field leaves the stored value alone, ``""`` clears it (to ``cleared``: "", None, [] …),
    a value replaces it. Every service applies fields through this one function."""
    if sent is None:
        return stored
    if sent is CLEAR:
        return cleared
    return sent


@dataclass(frozen=True)
class PatientIdentifier:
    mrn: str
    assigning_authority: str = ""  # empty: the facility's own namespace


@dataclass(frozen=True)
class PatientFacts:
    identifier: PatientIdentifier
    # Each ``Sent``: None = not sent (leave alone), CLEAR = ``""`` (delete), else the new value.
    family_name: Sent[str] = None
    given_name: Sent[str] = None
    middle_name: Sent[str] = None
    birth_date: Sent[date] = None
    sex: Sent[str] = None  # HL7 table 0001
    other_identifiers: tuple[PatientIdentifier, ...] = ()


@dataclass(frozen=True)
class OrderFacts:
    """One ORC/OBR group of an ORM^O01 or OMI^O23.

    The keys (control, accession, placer, filler) are plain strings: they find the order. Every
    other field is ``Sent`` — None when the message left it empty, CLEAR for ``""`` — and is
    applied with ``hl7_update``."""

    control: str  # ORC-1: NW, XO, CA, DC, OC, SC
    accession_number: str
    placer_order_number: str = ""
    filler_order_number: str = ""
    placer_order_issuer: Sent[str] = None  # ORC-2.2 namespace (echoed in the ORU)
    filler_order_issuer: Sent[str] = None  # ORC-3.2
    accession_issuer: Sent[str] = None  # IPC-1.2 / the facility's accession namespace
    requested_procedure_id: Sent[str] = None  # IPC-2 / OBR-19
    scheduled_procedure_step_id: Sent[str] = None  # IPC-4 / OBR-20
    study_instance_uid: Sent[str] = None  # IPC-3 / ZDS-1.1
    modality: Sent[str] = None  # IPC-5 / OBR-24
    procedure_code: Sent[str] = None
    procedure_text: Sent[str] = None
    procedure_coding_system: Sent[str] = None
    priority_code: Sent[str] = None  # raw HL7 priority: S, A, R, P, C, T …
    # OBR-31, every repetition: ({"code", "text", "system"}, …)
    reasons: Sent[tuple[dict, ...]] = None
    clinical_information: Sent[str] = None  # OBR-13
    ordering_provider_id: Sent[str] = None
    ordering_provider_name: Sent[str] = None
    # (component name, value), non-empty only; the XCN is applied as one value
    ordering_provider_xcn: Sent[tuple[tuple[str, str], ...]] = None
    copies_to: Sent[tuple[dict, ...]] = None  # OBR-28, each XCN as {component: value}
    order_status: str = ""  # ORC-5
    ordered_at: Sent[datetime] = None
    scheduled_at: Sent[datetime] = None
    patient_class: Sent[str] = None  # PV1-2: E emergency, I inpatient, O outpatient
    patient_location: Sent[str] = None  # PV1-3 as sent (point of care^room^bed^facility)
    visit_number: Sent[str] = None  # PV1-19.1
    visit_number_authority: Sent[str] = None  # PV1-19.4
    notes: Sent[tuple[str, ...]] = None  # NTE-3 of the order group; no NTE = leave the notes


@dataclass(frozen=True)
class OrderMessage:
    patient: PatientFacts
    orders: tuple[OrderFacts, ...]
    sent_at: datetime | None = None


@dataclass(frozen=True)
class DemographicsUpdate:
    """ADT^A08 (and A31): new demographics for a patient already known."""

    patient: PatientFacts


@dataclass(frozen=True)
class PatientMerge:
    """ADT^A40: ``prior`` (MRG-1) is merged into ``surviving`` (PID-3) and never used again."""

    surviving: PatientFacts
    prior: tuple[PatientIdentifier, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class InstanceHeader:
    """The attributes of one DICOM instance that ingest indexes (read without the pixel data)."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str = ""
    accession_number: str = ""
    # Issuer of Accession Number Sequence (0008,0051): its Local Namespace Entity ID, else its
    # Universal Entity ID — the authority that numbered the accession, when the modality says
    issuer_of_accession: str = ""
    modality: str = ""
    study_description: str = ""
    series_description: str = ""
    body_part: str = ""
    series_number: int | None = None
    instance_number: int | None = None
    study_datetime: datetime | None = None  # naive: local time at the facility
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    patient_family_name: str = ""
    patient_given_name: str = ""
    patient_birth_date: date | None = None
    patient_sex: str = ""
    institution_name: str = ""
    requested_procedure_codes: tuple[str, ...] = ()
    study_id: str = ""  # StudyID (SH), a QIDO-RS matching key
    referring_physician_name: str = ""  # ReferringPhysicianName, FAMILY^GIVEN^MIDDLE


@dataclass(frozen=True)
class AiFindingFacts:
    """One finding of an AI result: what (a coded concept, SNOMED CT or RadLex), whether present,
    how sure the algorithm is (0–1) when it says, and on which images."""

    code_value: str
    coding_scheme: str
    meaning: str
    present: bool
    probability: float | None = None
    referenced_sop_instance_uids: tuple[str, ...] = ()


@dataclass(frozen=True)
class AiResultFacts:
    """An AI result as the edge read it (DICOM SR/SEG/KOS or an HL7 ORU), before it is linked."""

    source: str  # sr | seg | kos | hl7
    study_instance_uid: str
    accession_number: str
    manufacturer: str
    model: str
    version: str
    findings: tuple[AiFindingFacts, ...]
    sop_instance_uid: str = ""  # the SR/SEG/KOS itself; the ORU's MSH-10 for HL7
    referenced_sop_instance_uids: tuple[str, ...] = ()


@dataclass(frozen=True)
class HistoricalReportFacts:
    """The hospital's own earlier report of a patient, as its RIS sent it (an ORU^R01 of its report
    history, docs/priors.md): who, which exam, who read it, the final, corrected or preliminary
    text. The metadata are ``Sent``: a new version of the report keeps what the message left empty."""

    patient: PatientFacts
    accession_number: str
    study_instance_uid: str  # "" when the RIS did not send it (ZDS-1.1 / OBX 110180)
    procedure_code: Sent[str]
    procedure_text: Sent[str]
    observed_at: Sent[datetime]  # naive: the facility's local time, as HL7 sends it
    reported_at: Sent[datetime]
    result_status: str  # F | C | P
    radiologist_name: Sent[str]
    text: str
    source: str  # MSH-3^MSH-4
    control_id: str  # MSH-10


@dataclass(frozen=True)
class FhirReportFacts:
    """One DiagnosticReport a facility's FHIR source gave for a patient (docs/priors.md, "FHIR
    DiagnosticReport sources"), already checked: the patient's MRN and issuer, a status we keep,
    a text. Times are aware (FHIR instants carry their zone)."""

    fhir_id: str  # DiagnosticReport.id at the source
    fhir_version: str  # meta.versionId, else meta.lastUpdated, else ""
    result_status: str  # F final | A amended (also appended) | C corrected | P preliminary
    accession_number: str  # identifier / basedOn of type ACSN; "" when it gave none
    procedure_code: str
    procedure_text: str
    observed_at: datetime | None  # effectiveDateTime (or effectivePeriod.start)
    reported_at: datetime | None  # issued
    radiologist_name: str  # resultsInterpreter, else performer
    text: str
    # the report's text is at a presentedForm url that could not be fetched: ``text`` says so (and
    # gives the conclusion, if any); the row is replaced in place once the text is fetched
    text_pending: bool = False
