"""What the edges learn from a message or an image, as plain data.

Protocol code (interfaces/hl7, interfaces/dicom) turns bytes into these; imaging.services applies
them to the database. Nothing here touches a socket or the ORM."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime


@dataclass(frozen=True)
class PatientIdentifier:
    mrn: str
    assigning_authority: str = ""  # empty: the facility's own namespace


@dataclass(frozen=True)
class PatientFacts:
    identifier: PatientIdentifier
    family_name: str = ""
    given_name: str = ""
    middle_name: str = ""
    birth_date: date | None = None
    sex: str = "U"  # HL7 table 0001
    other_identifiers: tuple[PatientIdentifier, ...] = ()


@dataclass(frozen=True)
class OrderFacts:
    """One ORC/OBR group of an ORM^O01 or OMI^O23."""

    control: str  # ORC-1: NW, XO, CA, DC, OC, SC
    accession_number: str
    placer_order_number: str = ""
    filler_order_number: str = ""
    requested_procedure_id: str = ""
    study_instance_uid: str = ""
    modality: str = ""
    procedure_code: str = ""
    procedure_text: str = ""
    procedure_coding_system: str = ""
    priority_code: str = ""  # raw HL7 priority: S, A, R, P, C, T …
    reason: str = ""
    clinical_information: str = ""
    ordering_provider_id: str = ""
    ordering_provider_name: str = ""
    ordering_provider_xcn: tuple[tuple[str, str], ...] = ()  # (component name, value), non-empty only
    order_status: str = ""  # ORC-5
    ordered_at: datetime | None = None
    scheduled_at: datetime | None = None
    patient_class: str = ""  # PV1-2: E emergency, I inpatient, O outpatient
    notes: tuple[str, ...] = ()


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
