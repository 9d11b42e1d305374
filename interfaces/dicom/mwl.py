"""Modality Worklist SCP handler (PS3.4 Annex K, Modality Worklist Information Model – FIND) on the one
SCP port: a facility without a RIS worklist has its scanners fill the patient and the order from
ReadRoom's open orders (docs/priors.md "Modality Worklist"). Protocol only: the identifier is read
here, the reads are ``interfaces.dicom.mwl_query``'s.

* Matching keys (PS3.4 K.2.2.1, C.2.2.2): the patient's (PatientName wildcards, PatientID,
  IssuerOfPatientID, PatientBirthDate range, PatientSex), AccessionNumber, RequestedProcedureID,
  StudyInstanceUID, and in the Scheduled Procedure Step Sequence's item Modality,
  ScheduledStationAETitle, ScheduledProcedureStepStartDate and …StartTime (ranges),
  ScheduledProcedureStepID and …Status. Empty or ``*`` is universal matching; other keys are return
  keys only.
* The answer carries exactly the keys asked for (at the top and in the step's item), plus the
  character set; an asked-for sequence we do not hold answers empty."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from facilities.models import Facility
from interfaces.dicom.mwl_query import QueryError, WorklistQuery, mwl_find
from interfaces.dicom.qr import IDENTIFIER_MISMATCH, PENDING, SUCCESS, _dicom_value, _error_comment, _text

log = logging.getLogger(__name__)

STEP = "ScheduledProcedureStepSequence"
CONTROL_KEYS = {"SpecificCharacterSet", "TimezoneOffsetFromUTC", "QueryRetrieveLevel"}
MATCHED = {
    "PatientID", "PatientName", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "AccessionNumber", "RequestedProcedureID", "StudyInstanceUID",
}  # fmt: skip
STEP_MATCHED = {
    "Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime", "ScheduledProcedureStepID", "ScheduledProcedureStepStatus",
}  # fmt: skip


def worklist_query(identifier: Dataset) -> WorklistQuery:
    matches = tuple(_keys(identifier, MATCHED))
    steps = identifier.get(STEP) or []
    if len(steps) > 1:
        raise QueryError("the Scheduled Procedure Step Sequence of a query has one item")
    step = tuple(_keys(steps[0], STEP_MATCHED)) if steps else ()
    return WorklistQuery(matches, step)


def _keys(dataset: Dataset, matched: set[str]) -> Iterator[tuple[str, str]]:
    for element in dataset:
        if element.keyword in matched and element.VR != "SQ":
            value = _text(element.value)
            if value not in ("", "*"):
                yield element.keyword, value


def worklist_responses(
    facility: Facility, identifier: Dataset, *, calling_ae_title: str, cancelled
) -> Iterator[tuple[int, Dataset | None]]:
    try:
        query = worklist_query(identifier)
        for values in mwl_find(facility, query, calling_ae_title=calling_ae_title):
            if cancelled():
                yield 0xFE00, None
                return
            yield PENDING, _response(identifier, values)
    except QueryError as exc:
        log.warning("MWL C-FIND from %s refused: %s", calling_ae_title, exc)
        yield IDENTIFIER_MISMATCH, _error_comment(str(exc))
        return
    yield SUCCESS, None


def _response(identifier: Dataset, values: dict) -> Dataset:
    response = _filled(identifier, values)
    response.SpecificCharacterSet = "ISO_IR 192"  # our index is UTF-8
    return response


def _filled(asked: Dataset, values: dict) -> Dataset:
    """The keys of ``asked``, each from ``values`` (else zero-length); the step's item from its own
    values, the procedure code's item from the order's code."""
    response = Dataset()
    for element in asked:
        keyword = element.keyword
        if not keyword or keyword in CONTROL_KEYS:
            continue
        if keyword == STEP:
            items = element.value or [Dataset()]
            setattr(response, keyword, Sequence([_filled(items[0], values["ScheduledProcedureStep"])]))
        elif keyword == "RequestedProcedureCodeSequence":
            code = values["RequestedProcedureCode"]
            setattr(response, keyword, Sequence([_code(code)] if code[0] else []))
        elif element.VR == "SQ":
            setattr(response, keyword, Sequence())
        else:
            setattr(response, keyword, _dicom_value(keyword, values.get(keyword)))
    return response


def _code(code: tuple[str, str, str]) -> Dataset:
    value, scheme, meaning = code
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value[:16], scheme[:16], meaning[:64]
    return item
