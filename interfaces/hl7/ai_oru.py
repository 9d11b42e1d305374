"""An AI node's ORU^R01 (docs/ai.md): each OBX with a coded finding, its presence and probability,
read into ``AiResultFacts``. Pure; accepted only from a sender onboarded as an AI node.

* OBX-3 (CWE) the finding (SNOMED CT / RadLex), OBX-5 its presence: a code or word for present /
  absent (SCT 52101004 / 2667000, Y/N, Present/Absent, Positive/Negative).
* An NM OBX named probability / likelihood / confidence: the probability of the finding before it
  (0–1, or 0–100 with unit %).
* OBX-18 (equipment instance identifier) manufacturer^model^version of the algorithm; else MSH-3.
* The study: an OBX 110180 (DCM Study Instance UID), else the accession OBR-18, else OBR-3."""

from __future__ import annotations

from imaging.facts import AiFindingFacts, AiResultFacts
from interfaces.hl7.parse import (
    DATA_TYPE_ERROR,
    REQUIRED_FIELD_MISSING,
    AnyMessage,
    Header,
    Hl7Error,
    _loc,
    _segments,
    get,
)

PRESENT = {"52101004", "373066001", "Y", "YES", "PRESENT", "POSITIVE", "POS", "DETECTED"}
ABSENT = {"2667000", "373067005", "N", "NO", "ABSENT", "NEGATIVE", "NEG", "NOT DETECTED"}
PROBABILITY_WORDS = ("PROBAB", "LIKELIHOOD", "CONFIDENCE", "CERTAINTY")
STUDY_UID_CODE = "110180"


def ai_oru_read(message: AnyMessage, header: Header) -> AiResultFacts:
    obr = next(iter(_segments(message, "OBR")), None)
    if obr is None:
        raise Hl7Error("AE", REQUIRED_FIELD_MISSING, "an AI result needs an OBR", _loc("OBR", 1))
    accession = (get(obr, 18) or get(obr, 3))[:16]
    study_uid, algorithm = "", ("", "", "")
    findings: list[AiFindingFacts] = []
    for seq, obx in enumerate(_segments(message, "OBX"), start=1):
        code, meaning, scheme = get(obx, 3, comp=1), get(obx, 3, comp=2), get(obx, 3, comp=3)
        if code == STUDY_UID_CODE:
            study_uid = get(obx, 5)[:64]
            continue
        if get(obx, 18):
            algorithm = (get(obx, 18, comp=1), get(obx, 18, comp=2), get(obx, 18, comp=3))
        if get(obx, 2) == "NM" and any(w in meaning.upper() for w in PROBABILITY_WORDS):
            findings = _with_probability(findings, obx, seq)
            continue
        presence = _presence(get(obx, 5, comp=1), get(obx, 5, comp=2))
        if presence is None:
            continue  # a text or other observation: not a coded finding
        if not code:
            raise Hl7Error(
                "AE", REQUIRED_FIELD_MISSING, "OBX-3 finding code is required", _loc("OBX", 3, seq)
            )
        findings.append(AiFindingFacts(code, scheme, meaning, presence))
    if not findings:
        raise Hl7Error("AE", REQUIRED_FIELD_MISSING, "no coded AI finding (OBX-3 with OBX-5)", _loc("OBX", 5))
    if not (accession or study_uid):
        raise Hl7Error("AE", REQUIRED_FIELD_MISSING, "no accession (OBR-18 / OBR-3)", _loc("OBR", 18))
    manufacturer, model, version = algorithm
    return AiResultFacts(
        source="hl7",
        study_instance_uid=study_uid,
        accession_number=accession,
        manufacturer=manufacturer or header.sending_application,
        model=model,
        version=version,
        findings=tuple(findings),
        sop_instance_uid=f"{header.sending_application}^{header.control_id}",
    )


def _presence(code: str, text: str) -> bool | None:
    for value in (code.upper(), text.upper()):
        if value in PRESENT:
            return True
        if value in ABSENT:
            return False
    return None


def _with_probability(findings: list[AiFindingFacts], obx, seq: int) -> list[AiFindingFacts]:
    if not findings:
        raise Hl7Error("AE", DATA_TYPE_ERROR, "a probability before any finding", _loc("OBX", 5, seq))
    try:
        value = float(get(obx, 5))
    except ValueError as exc:
        raise Hl7Error(
            "AE", DATA_TYPE_ERROR, f"OBX-5 {get(obx, 5)!r} is not a number", _loc("OBX", 5, seq)
        ) from exc
    value = value / 100 if get(obx, 6, comp=1) == "%" else value
    if not 0 <= value <= 1:
        raise Hl7Error("AE", DATA_TYPE_ERROR, f"probability {value} outside 0–1", _loc("OBX", 5, seq))
    last = findings[-1]
    return [
        *findings[:-1],
        AiFindingFacts(last.code_value, last.coding_scheme, last.meaning, last.present, value),
    ]
