"""DICOM JSON (PS3.18 Annex F) for DICOMweb answers: from the database index (QIDO-RS), from stored
headers (WADO-RS metadata) and for the STOW-RS response. Pure functions over rows and datasets.

An attribute is ``"GGGGEEEE": {"vr": VR, "Value": [...]}``; an empty attribute has no ``Value``
(F.2.5); a person name is ``{"Alphabetic": "FAMILY^GIVEN^MIDDLE"}`` (F.2.2); IS/DS/US values are
JSON numbers (F.2.3)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from imaging.models import Instance, Patient, Series, Study

JsonDataset = dict[str, dict[str, Any]]

# VRs whose values can be large binary blobs: left out of WADO-RS metadata beyond this size, the
# way archives leave pixel data out (PS3.18 §8.7.3.5: metadata is the header, not bulk data).
BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
BULK_THRESHOLD = 1024


def tag_hex(tag: int) -> str:
    return f"{tag:08X}"


def attribute_tag(name: str) -> int | None:
    """A query key or includefield as a tag: a keyword (``PatientID``) or 8 hex digits (``00100020``)."""
    name = name.strip()
    if len(name) == 8:
        try:
            return int(name, 16)
        except ValueError:
            pass
    return tag_for_keyword(name)


def attribute_name(tag: int) -> str:
    return keyword_for_tag(tag) or tag_hex(tag)


def element(vr: str, *values: Any) -> dict[str, Any]:
    present = [v for v in values if v not in (None, "")]
    return {"vr": vr, "Value": present} if present else {"vr": vr}


def person_name(*components: str) -> str:
    return "^".join(components).rstrip("^")


def _pn(patient: Patient | None) -> dict[str, Any]:
    if patient is None:
        return {"vr": "PN"}
    name = person_name(patient.family_name, patient.given_name, patient.middle_name)
    return {"vr": "PN", "Value": [{"Alphabetic": name}]} if name else {"vr": "PN"}


def _local(study: Study) -> datetime | None:
    # DA/TM carry no zone: they are the facility's local time, as the modality wrote them.
    if study.study_datetime is None:
        return None
    return study.study_datetime.astimezone(study.facility.zone)


# Tags (pydicom keywords would do, but the JSON keys are the tags themselves)
SPECIFIC_CHARACTER_SET = 0x00080005
STUDY_DATE, STUDY_TIME = 0x00080020, 0x00080030
ACCESSION_NUMBER = 0x00080050
INSTANCE_AVAILABILITY = 0x00080056
MODALITIES_IN_STUDY = 0x00080061
STUDY_DESCRIPTION, SERIES_DESCRIPTION = 0x00081030, 0x0008103E
RETRIEVE_URL = 0x00081190
PATIENT_NAME, PATIENT_ID, PATIENT_BIRTH_DATE, PATIENT_SEX = 0x00100010, 0x00100020, 0x00100030, 0x00100040
STUDY_INSTANCE_UID, SERIES_INSTANCE_UID = 0x0020000D, 0x0020000E
SOP_CLASS_UID, SOP_INSTANCE_UID = 0x00080016, 0x00080018
MODALITY = 0x00080060
SERIES_NUMBER, INSTANCE_NUMBER = 0x00200011, 0x00200013
BODY_PART_EXAMINED = 0x00180015
REFERRING_PHYSICIAN_NAME, STUDY_ID = 0x00080090, 0x00200010
STUDY_SERIES_COUNT, STUDY_INSTANCE_COUNT, SERIES_INSTANCE_COUNT = 0x00201206, 0x00201208, 0x00201209
AVAILABLE_TRANSFER_SYNTAX_UID = 0x00083002


def study_attributes(study: Study, *, retrieve_url: str) -> JsonDataset:
    """Study result attributes (PS3.18 Table 10.6.3-3) from the index. Needs ``facility`` and
    ``patient`` loaded (select_related)."""
    local = _local(study)
    patient = study.patient
    return {
        tag_hex(SPECIFIC_CHARACTER_SET): element("CS", "ISO_IR 192"),  # UTF-8
        tag_hex(STUDY_DATE): element("DA", local.strftime("%Y%m%d") if local else None),
        tag_hex(STUDY_TIME): element("TM", local.strftime("%H%M%S") if local else None),
        tag_hex(ACCESSION_NUMBER): element("SH", study.accession_number),
        tag_hex(INSTANCE_AVAILABILITY): element("CS", "ONLINE"),
        tag_hex(MODALITIES_IN_STUDY): element("CS", *filter(None, study.modalities.split("\\"))),
        tag_hex(STUDY_DESCRIPTION): element("LO", study.description),
        tag_hex(REFERRING_PHYSICIAN_NAME): (
            {"vr": "PN", "Value": [{"Alphabetic": study.referring_physician_name}]}
            if study.referring_physician_name
            else {"vr": "PN"}
        ),
        tag_hex(RETRIEVE_URL): element("UR", retrieve_url),
        tag_hex(PATIENT_NAME): _pn(patient),
        tag_hex(PATIENT_ID): element("LO", patient.mrn if patient else None),
        tag_hex(PATIENT_BIRTH_DATE): element(
            "DA", patient.birth_date.strftime("%Y%m%d") if patient and patient.birth_date else None
        ),
        # DICOM knows M, F and O (PS3.3 C.7.1.1); HL7's U/A/N are "unknown" here: empty.
        tag_hex(PATIENT_SEX): element(
            "CS", patient.sex if patient and patient.sex in {"M", "F", "O"} else None
        ),
        tag_hex(BODY_PART_EXAMINED): element("CS", study.body_part),
        tag_hex(STUDY_INSTANCE_UID): element("UI", study.study_instance_uid),
        tag_hex(STUDY_ID): element("SH", study.dicom_study_id),
        tag_hex(STUDY_SERIES_COUNT): element("IS", study.number_of_series),
        tag_hex(STUDY_INSTANCE_COUNT): element("IS", study.number_of_instances),
    }


def series_attributes(series: Series, *, retrieve_url: str) -> JsonDataset:
    """Series result attributes (PS3.18 Table 10.6.3-4)."""
    return {
        tag_hex(SPECIFIC_CHARACTER_SET): element("CS", "ISO_IR 192"),
        tag_hex(MODALITY): element("CS", series.modality),
        tag_hex(SERIES_DESCRIPTION): element("LO", series.description),
        tag_hex(BODY_PART_EXAMINED): element("CS", series.body_part),
        tag_hex(RETRIEVE_URL): element("UR", retrieve_url),
        tag_hex(STUDY_INSTANCE_UID): element("UI", series.study.study_instance_uid),
        tag_hex(SERIES_INSTANCE_UID): element("UI", series.series_instance_uid),
        tag_hex(SERIES_NUMBER): element("IS", series.series_number),
        tag_hex(SERIES_INSTANCE_COUNT): element("IS", series.number_of_instances),
    }


def instance_attributes(instance: Instance, *, retrieve_url: str) -> JsonDataset:
    """Instance result attributes (PS3.18 Table 10.6.3-5) that the index holds."""
    return {
        tag_hex(SPECIFIC_CHARACTER_SET): element("CS", "ISO_IR 192"),
        tag_hex(SOP_CLASS_UID): element("UI", instance.sop_class_uid),
        tag_hex(SOP_INSTANCE_UID): element("UI", instance.sop_instance_uid),
        tag_hex(INSTANCE_AVAILABILITY): element("CS", "ONLINE"),
        tag_hex(AVAILABLE_TRANSFER_SYNTAX_UID): element("UI", instance.transfer_syntax_uid),
        tag_hex(RETRIEVE_URL): element("UR", retrieve_url),
        tag_hex(STUDY_INSTANCE_UID): element("UI", instance.series.study.study_instance_uid),
        tag_hex(SERIES_INSTANCE_UID): element("UI", instance.series.series_instance_uid),
        tag_hex(INSTANCE_NUMBER): element("IS", instance.instance_number),
    }


# ``includefield=all`` at the study and series levels: the index's attributes plus these, read from
# the header of the study's (series') first instance — the Patient, General Study and General
# Series module attributes a viewer or PACS lists (what Orthanc calls its main DICOM tags).
STUDY_LEVEL_TAGS = frozenset(
    {
        0x00080080,  # InstitutionName
        0x00080201,  # TimezoneOffsetFromUTC
        0x00081060,  # NameOfPhysiciansReadingStudy
        0x00081080,  # AdmittingDiagnosesDescription
        0x00100021,  # IssuerOfPatientID
        0x00100032,  # PatientBirthTime
        0x00101000,  # OtherPatientIDs
        0x00101010,  # PatientAge
        0x00101020,  # PatientSize
        0x00101030,  # PatientWeight
        0x00321060,  # RequestedProcedureDescription
    }
)
SERIES_LEVEL_TAGS = frozenset(
    {
        0x00080021,  # SeriesDate
        0x00080031,  # SeriesTime
        0x00080070,  # Manufacturer
        0x00081010,  # StationName
        0x00081050,  # PerformingPhysicianName
        0x00081070,  # OperatorsName
        0x00081090,  # ManufacturerModelName
        0x00181030,  # ProtocolName
        0x00185100,  # PatientPosition
        0x00200052,  # FrameOfReferenceUID
        0x00200060,  # Laterality
        0x00400244,  # PerformedProcedureStepStartDate
        0x00400245,  # PerformedProcedureStepStartTime
    }
)


def header_attributes(ds: Dataset, tags: Iterable[int] | None) -> JsonDataset:
    """Attributes read from a stored header for ``includefield`` (``None``: every attribute)."""
    full = dataset_json(ds)
    if tags is None:
        return full
    wanted = {tag_hex(t) for t in tags}
    return {key: value for key, value in full.items() if key in wanted}


def dataset_json(ds: Dataset, *, transfer_syntax_uid: str = "", bulkdata_url: str = "") -> JsonDataset:
    """A stored header as WADO-RS metadata, plus Available Transfer Syntax UID so a viewer knows
    what frames it gets.

    With ``bulkdata_url`` (the instance's ``…/bulkdata``), a binary value longer than
    ``BULK_THRESHOLD`` as base64 — pixel data, overlays, LUTs, waveforms, also inside sequences — is
    a ``BulkDataURI`` to it (PS3.18 §8.7.3.5 and F.2.6: metadata carries the header, bulk data by
    reference); shorter ones are ``InlineBinary``. Without it (QIDO ``includefield``) they are left
    out."""
    if bulkdata_url:
        paths = bulkdata_paths(ds)
        result = ds.to_json_dict(
            bulk_data_threshold=BULK_THRESHOLD,
            bulk_data_element_handler=lambda elem: f"{bulkdata_url}/{paths[id(elem)]}",
            suppress_invalid_tags=True,
        )
    else:
        trimmed = Dataset()
        for elem in ds:
            if elem.VR in BULK_VRS and elem.value is not None and _length(elem.value) > BULK_THRESHOLD:
                continue
            trimmed.add(elem)
        result = trimmed.to_json_dict(suppress_invalid_tags=True)
    if transfer_syntax_uid:
        result[tag_hex(AVAILABLE_TRANSFER_SYNTAX_UID)] = element("UI", transfer_syntax_uid)
    return dict(sorted(result.items()))


def bulkdata_paths(ds: Dataset, prefix: str = "") -> dict[int, str]:
    """Where each binary element sits, by object id (pydicom's bulk data handler is given the
    element alone): ``7FE00010`` at the top level, ``00409096/0/00409212`` inside a sequence item —
    the path the bulkdata endpoint walks back (``element_at``)."""
    paths: dict[int, str] = {}
    for elem in ds:
        path = f"{prefix}{tag_hex(elem.tag)}"
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value or []):
                paths.update(bulkdata_paths(item, f"{path}/{index}/"))
        elif elem.VR in BULK_VRS or " or " in elem.VR:  # "OB or OW", "US or OW": binary as read
            paths[id(elem)] = path
    return paths


def element_at(ds: Dataset, path: str):
    """The element a bulkdata path names (``bulkdata_paths``), or None."""
    segments = path.strip("/").split("/")
    if len(segments) % 2 == 0:
        return None
    current = ds
    for position, segment in enumerate(segments):
        if position % 2:  # an item index
            if not segment.isdigit() or int(segment) >= len(current.value or []):
                return None
            current = current.value[int(segment)]
            continue
        try:
            tag = int(segment, 16)
        except ValueError:
            return None
        if len(segment) != 8 or tag not in current:
            return None
        current = current[tag]
        if position < len(segments) - 1 and current.VR != "SQ":
            return None
    return current


def _length(value: Any) -> int:
    try:
        return len(value)
    except TypeError:
        return 0


# --- STOW-RS response (PS3.18 §10.5.3, Store Instances Response Module) ---------------------------

REFERENCED_SOP_CLASS_UID, REFERENCED_SOP_INSTANCE_UID = 0x00081150, 0x00081155
WARNING_REASON, FAILURE_REASON = 0x00081196, 0x00081197
FAILED_SOP_SEQUENCE, REFERENCED_SOP_SEQUENCE = 0x00081198, 0x00081199


@dataclass(frozen=True)
class StoreOutcome:
    """What happened to one part of a STOW-RS request."""

    sop_class_uid: str
    sop_instance_uid: str
    status: int  # a C-STORE status (PS3.4 B.2.3): 0 stored, else the failure reason
    retrieve_url: str = ""
    reason: str = ""
    study_uid: str = ""

    @property
    def stored(self) -> bool:
        return self.status == 0


def stow_response(outcomes: Iterable[StoreOutcome], *, study_retrieve_url: str) -> JsonDataset:
    outcomes = list(outcomes)
    stored = [
        {
            tag_hex(REFERENCED_SOP_CLASS_UID): element("UI", o.sop_class_uid),
            tag_hex(REFERENCED_SOP_INSTANCE_UID): element("UI", o.sop_instance_uid),
            tag_hex(RETRIEVE_URL): element("UR", o.retrieve_url),
        }
        for o in outcomes
        if o.stored
    ]
    failed = [
        {
            tag_hex(REFERENCED_SOP_CLASS_UID): element("UI", o.sop_class_uid),
            tag_hex(REFERENCED_SOP_INSTANCE_UID): element("UI", o.sop_instance_uid),
            tag_hex(FAILURE_REASON): element("US", o.status),
        }
        for o in outcomes
        if not o.stored
    ]
    response: JsonDataset = {tag_hex(SPECIFIC_CHARACTER_SET): element("CS", "ISO_IR 192")}
    # Retrieve URL of the study only when there is a study to retrieve (§10.5.3.1: "if any
    # instances were stored").
    response[tag_hex(RETRIEVE_URL)] = element("UR", study_retrieve_url if stored else None)
    response[tag_hex(FAILED_SOP_SEQUENCE)] = {"vr": "SQ", "Value": failed} if failed else {"vr": "SQ"}
    response[tag_hex(REFERENCED_SOP_SEQUENCE)] = {"vr": "SQ", "Value": stored} if stored else {"vr": "SQ"}
    return response


def stow_http_status(outcomes: Iterable[StoreOutcome]) -> int:
    """PS3.18 §10.5.3: 200 every instance stored, 202 some failed, 409 none stored."""
    states = {o.stored for o in outcomes}
    if states == {True}:
        return 200
    if states == {True, False}:
        return 202
    return 409
