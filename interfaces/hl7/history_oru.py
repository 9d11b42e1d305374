"""A RIS's historical report (ORU^R01 of its report history, docs/priors.md): the hospital's own final
or corrected report of an earlier exam, read into ``HistoricalReportFacts``. Pure; accepted only from
a sender of a facility that takes report history (``Facility.hl7_report_history``) and that is not
an AI node (an AI node's ORU is its result, ``ai_oru``).

* PID-3 the patient: MRN and its assigning authority (PID-3.4), matched in the facility's identity
  domain like an order's, never by name.
* OBR-18 the accession (else OBR-3, the filler order number), OBR-4 the procedure, OBR-7 when the
  exam was done, OBR-22 when the result was reported, OBR-25 the result status: F final, C
  corrected or P preliminary (shown marked as such; dcm4chee's RAD-128 import reads P as PARTIAL);
  a cancelled or other result is not history. OBR-32 the reading radiologist (else OBX-16, the
  responsible observer).
* The prior study's Study Instance UID, when sent: ZDS-1.1 (IHE's Z-segment, as in an ORM), else an
  OBX whose OBX-3 is DCM 110180 "Study Instance UID" (dcm4chee's RAD-128 rows). It links the report
  to the prior even when ReadRoom holds the prior under no accession (a retrieved prior).
* The metadata (procedure, times, radiologist) follow the update rule of every HL7 field (docs/
  orders.md): empty leaves the earlier version's value, ``""`` deletes it.
* The text: every OBX of value type TX or FT, in order, each repetition of OBX-5 a line; FT's
  ``\\.br\\`` is a line break. Other OBX rows (codes, numbers) are not the report and are skipped."""

from __future__ import annotations

import re
from datetime import datetime

from imaging.facts import CLEAR, HistoricalReportFacts, Sent
from interfaces.hl7.parse import (
    DATA_TYPE_ERROR,
    NULL,
    REQUIRED_FIELD_MISSING,
    TABLE_VALUE_NOT_FOUND,
    AnyMessage,
    Header,
    Hl7Error,
    _loc,
    _optional_ts,
    _patient,
    _person_name,
    _segments,
    get,
    raw_field,
    sent_component,
)

TEXT_TYPES = ("TX", "FT")
HISTORY_STATUSES = {"F": "final", "C": "corrected", "P": "preliminary"}
STUDY_UID_CODE = "110180"  # DCM: Study Instance UID
MAX_TEXT = 100_000  # characters: a report, not a book; longer is refused, never cut short


def history_oru_read(message: AnyMessage, header: Header) -> HistoricalReportFacts:
    patient = _patient(message)
    obr = next(iter(_segments(message, "OBR")), None)
    if obr is None:
        raise Hl7Error("AE", REQUIRED_FIELD_MISSING, "a historical report needs an OBR", _loc("OBR", 1))
    accession = get(obr, 18) or get(obr, 3)
    if not accession:
        raise Hl7Error("AE", REQUIRED_FIELD_MISSING, "no accession (OBR-18 / OBR-3)", _loc("OBR", 18))
    if len(accession) > 16:
        raise Hl7Error(
            "AE", DATA_TYPE_ERROR, f"accession {accession!r} is longer than 16 characters", _loc("OBR", 18)
        )
    obxs = _segments(message, "OBX")
    status = get(obr, 25).upper() or next((get(o, 11).upper() for o in obxs if get(o, 11)), "")
    if status not in HISTORY_STATUSES:
        shown = status or "empty"
        raise Hl7Error(
            "AE",
            TABLE_VALUE_NOT_FOUND,
            f"result status {shown}: report history takes F (final), C (corrected) or P (preliminary)",
            _loc("OBR", 25),
        )
    study_uid = _study_uid(message, obxs)
    lines = [line for obx in obxs if get(obx, 2).upper() in TEXT_TYPES for line in _text_lines(obx, header)]
    text = "\n".join(lines).strip()
    if not text:
        raise Hl7Error("AE", REQUIRED_FIELD_MISSING, "no report text (OBX of type TX or FT)", _loc("OBX", 5))
    if len(text) > MAX_TEXT:
        too_long = f"report text of {len(text)} characters exceeds {MAX_TEXT}"
        raise Hl7Error("AE", DATA_TYPE_ERROR, too_long, _loc("OBX", 5))
    return HistoricalReportFacts(
        patient=patient,
        accession_number=accession,
        study_instance_uid=study_uid,
        procedure_code=_cut(sent_component(obr, 4, 1), 64),
        procedure_text=_cut(sent_component(obr, 4, 2), 200),
        observed_at=_sent_ts(obr, 7),
        reported_at=_sent_ts(obr, 22),
        result_status=status,
        radiologist_name=_radiologist(obr, obxs),
        text=text,
        source=f"{header.sending_application}^{header.sending_facility}"[:200],
        control_id=header.control_id,
    )


def _study_uid(message: AnyMessage, obxs) -> str:
    zds = next(iter(_segments(message, "ZDS")), None)
    uid = get(zds, 1, comp=1) if zds is not None else ""
    if not uid:
        uid = next((get(o, 5) for o in obxs if get(o, 3, comp=1) == STUDY_UID_CODE), "")
    if uid and (len(uid) > 64 or not _UID.fullmatch(uid)):
        where = _loc("ZDS", 1) if zds is not None else _loc("OBX", 5)
        raise Hl7Error("AE", DATA_TYPE_ERROR, f"{uid[:70]!r} is not a Study Instance UID", where)
    return uid


_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def _cut(value: Sent[str], length: int) -> Sent[str]:
    return value[:length] if isinstance(value, str) else value


def _sent_ts(obr, field_num: int) -> Sent[datetime]:
    value = raw_field(obr, field_num)
    if value == NULL:
        return CLEAR
    return _optional_ts(get(obr, field_num), _loc("OBR", field_num))


def _radiologist(obr, obxs) -> Sent[str]:
    if raw_field(obr, 32) == NULL:
        return CLEAR
    return _interpreter(obr) or next((_person_name(o, 16) for o in obxs if get(o, 16)), "") or None


def _interpreter(obr) -> str:
    """OBR-32 (NDL): its first component is a CNN whose subcomponents are ID&family&given&middle&
    suffix&prefix&degree → "prefix given middle family suffix, degree"."""
    parts = [get(obr, 32, 1, 1, sub) for sub in (6, 3, 4, 2, 5)]
    name = " ".join(p for p in parts if p)
    degree = get(obr, 32, 1, 1, 7)
    return (f"{name}, {degree}" if name and degree else name)[:200]


_FORMATTING = re.compile(r"\\\.([a-z]{2})[^\\]*\\")


def _text_lines(obx, header: Header) -> list[str]:
    """OBX-5 as sent (escapes intact), one line per repetition, HL7 escapes undone."""
    repetition = header.encoding_characters[1]
    raw = raw_field(obx, 5)
    lines: list[str] = []
    for value in raw.split(repetition):
        lines += _unescape(value, header).split("\n")
    return [line.rstrip() for line in lines]


def _unescape(value: str, header: Header) -> str:
    component, repetition, escape, subcomponent = header.encoding_characters
    if escape not in value:
        return value
    # FT formatting: \.br\ a line break, \.sp\ a blank line; other commands (indent, centre) dropped
    value = _FORMATTING.sub(
        lambda m: {"br": "\n", "sp": "\n\n"}.get(m.group(1), ""), value.replace(escape, "\\")
    )
    for code, char in (
        ("F", header.field_separator),
        ("S", component),
        ("T", subcomponent),
        ("R", repetition),
    ):
        value = value.replace(f"\\{code}\\", char)
    return value.replace("\\E\\", "\\")
