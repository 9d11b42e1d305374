"""Query/Retrieve SCP handlers (PS3.4 Annex C): Patient Root and Study Root C-FIND, C-MOVE and C-GET on
the one SCP port, scoped to the calling AE's facility. Protocol only: the identifier is parsed here, the
reads are ``interfaces.dicom.qr_query``'s, the bytes come from the encrypted store.

* C-FIND returns exactly the keys the query asked for (plus Query/Retrieve Level and the character set);
* C-MOVE sends only to a destination AE listed for the facility (``dicom.move_destinations`` in the
  onboarding YAML); any other gets 0xA801 (PS3.4 C.4.2.1.4.1);
* C-GET sends back over the same association.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from io import BytesIO

from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import build_context
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from facilities.models import Facility
from imaging.storage import StorageError, encrypted_read
from interfaces.dicom.qr_query import PATIENT, QrQuery, QueryError, StoredObject, qr_find, qr_retrieve

log = logging.getLogger(__name__)

QR_SOP_CLASSES = (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
)
PATIENT_ROOT = {
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
}
LEVEL = {"PATIENT": PATIENT, "STUDY": "study", "SERIES": "series", "IMAGE": "instance"}

# C-FIND / C-MOVE / C-GET statuses (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4)
PENDING = 0xFF00
SUCCESS = 0x0000
IDENTIFIER_MISMATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
MOVE_DESTINATION_UNKNOWN = 0xA801
NOT_AUTHORISED = 0x0124
SUBOP_FAILED = 0xA702  # Refused: out of resources – unable to perform sub-operations
# Attributes that only steer the query: never matching keys, never echoed as values.
CONTROL_KEYS = {"QueryRetrieveLevel", "SpecificCharacterSet", "TimezoneOffsetFromUTC"}


class IdentifierError(ValueError):
    """The identifier cannot be a query of this information model (status 0xA900 / 0xC000)."""


def identifier_query(identifier: Dataset, sop_class_uid: str) -> QrQuery:
    """An identifier → the level and its matching keys (PS3.4 C.2.2.2). An empty value is universal
    matching, and so is a lone ``*``; a sequence is matched only when it has items with values."""
    level_text = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level_text not in LEVEL:
        raise IdentifierError(f"Query/Retrieve Level {level_text!r} is not PATIENT, STUDY, SERIES or IMAGE")
    if level_text == "PATIENT" and sop_class_uid not in PATIENT_ROOT:
        raise IdentifierError("the Study Root information model has no PATIENT level")
    matches = []
    for element in identifier:
        if element.keyword in CONTROL_KEYS or not element.keyword or element.VR == "SQ":
            continue
        value = _text(element.value)
        if value not in ("", "*"):
            matches.append((element.keyword, value))
    return QrQuery(LEVEL[level_text], tuple(matches))


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


def find_responses(
    facility: Facility, identifier: Dataset, sop_class_uid: str, *, calling_ae_title: str, cancelled
) -> Iterator[tuple[int, Dataset | None]]:
    try:
        query = identifier_query(identifier, sop_class_uid)
        matches = qr_find(facility, query, calling_ae_title=calling_ae_title)
        for values in matches:
            if cancelled():
                yield 0xFE00, None
                return
            yield PENDING, _response(identifier, values)
    except (IdentifierError, QueryError) as exc:
        log.warning("C-FIND from %s refused: %s", calling_ae_title, exc)
        yield IDENTIFIER_MISMATCH, _error_comment(str(exc))
        return
    yield SUCCESS, None


def _response(identifier: Dataset, values: dict[str, object]) -> Dataset:
    """The return keys are exactly the query's: each filled from what we hold, else zero-length."""
    response = Dataset()
    for element in identifier:
        keyword = element.keyword
        if not keyword:
            continue
        if keyword == "SpecificCharacterSet":
            response.SpecificCharacterSet = "ISO_IR 192"  # our index is UTF-8
        elif keyword == "QueryRetrieveLevel" or element.VR == "SQ":
            # a requested sequence we do not index answers empty (PS3.4 C.2.2.1.3)
            setattr(response, keyword, element.value if keyword == "QueryRetrieveLevel" else Sequence())
        else:
            setattr(response, keyword, _dicom_value(keyword, values.get(keyword)))
    if "SpecificCharacterSet" not in response:
        response.SpecificCharacterSet = "ISO_IR 192"
    return response


def _dicom_value(keyword: str, value):
    if value is None or value == "":
        return None
    if dictionary_VR(keyword) in {"IS", "US", "UL", "SS", "SL"}:
        return int(value)
    return value


def _error_comment(text: str) -> Dataset:
    comment = Dataset()
    comment.ErrorComment = text[:64]
    return comment


def retrieve_objects(
    facility: Facility, identifier: Dataset, sop_class_uid: str, *, calling_ae_title: str, via: str
) -> list[StoredObject]:
    return qr_retrieve(
        facility, identifier_query(identifier, sop_class_uid), calling_ae_title=calling_ae_title, via=via
    )


def move_destination(facility: Facility, ae_title: str) -> tuple[str, int] | None:
    """A destination AE listed for this facility; never one of another facility's list."""
    wanted = ae_title.strip()
    for entry in facility.dicom_move_destinations or []:
        if entry.get("ae_title") == wanted:
            return entry["host"], int(entry["port"])
    return None


def storage_contexts(objects: list[StoredObject]) -> list:
    """One presentation context per SOP class, offering each object's own transfer syntax (we send the
    bytes as stored) plus Explicit/Implicit VR Little Endian."""
    syntaxes: dict[str, set[str]] = {}
    for obj in objects:
        syntaxes.setdefault(obj.sop_class_uid, set()).add(obj.transfer_syntax_uid or "1.2.840.10008.1.2.1")
    contexts = []
    for sop_class, own in sorted(syntaxes.items()):
        offered = sorted(own | {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2"})
        contexts.append(build_context(sop_class, offered))
    return contexts[:128]  # at most 128 presentation contexts per association (PS3.8 9.3.2.2)


def dataset_read(obj: StoredObject) -> Dataset:
    return dcmread(BytesIO(encrypted_read(obj.storage_path)))


def retrieve_responses(
    objects: list[StoredObject], *, calling_ae_title: str
) -> Iterator[tuple[int, Dataset | None]]:
    """The (status, dataset) yields of a C-MOVE / C-GET after the sub-operation count: each object read
    (decrypted) as it is sent, so a large study is never all in memory."""
    for obj in objects:
        try:
            yield PENDING, dataset_read(obj)
        except (OSError, StorageError, ValueError) as exc:
            log.error("retrieve for %s: cannot read %s: %s", calling_ae_title, obj.sop_instance_uid, exc)
            failed = Dataset()
            failed.SOPInstanceUID = obj.sop_instance_uid
            yield SUBOP_FAILED, failed
