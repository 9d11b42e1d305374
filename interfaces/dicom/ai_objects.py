"""AI results as DICOM objects (IHE AI Results): a TID 1500 measurement report SR, a SEG, or a key
object selection pointing at the flagged images — read into ``AiResultFacts`` (docs/ai.md).

Parsed with highdicom, the field's reader of SR templates and segmentations; no ORM here. What is
read from a TID 1500 report, per measurement group (image, planar or volumetric):

* the finding: the group's *Finding* (121071) code, else the name of its presence evaluation;
* its presence: a qualitative evaluation valued *Present* (SCT 52101004) / *Absent* (SCT 2667000)
  (or Yes/No); a group without one reports a finding the algorithm found — present;
* its probability: a measurement named probability / likelihood / confidence / certainty (unit
  ``1`` or ``{ratio}``: 0–1; ``%``: divided by 100);
* the algorithm: manufacturer and model from the device observer (TID 1004), version from the
  group's Algorithm Identification (TID 4019), else the SR's Software Versions;
* the images: the group's source images, else the SR's evidence.

An SR whose observer is a person (a reader's measurements) is not an AI result: ``None``."""

from __future__ import annotations

from io import BytesIO

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from imaging.facts import AiFindingFacts, AiResultFacts

SR_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
}
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
AI_OBJECT_CLASSES = SR_CLASSES | {SEG_CLASS, KOS_CLASS}
IMAGING_MEASUREMENT_REPORT = "126000"  # DCM: the TID 1500 root
PRESENT = {("SCT", "52101004"), ("SRT", "52101004"), ("SCT", "373066001"), ("DCM", "R-0038D")}
ABSENT = {("SCT", "2667000"), ("SRT", "2667000"), ("SCT", "373067005"), ("DCM", "R-00339")}
PRESENCE_WORDS = {
    "present": True,
    "yes": True,
    "positive": True,
    "absent": False,
    "no": False,
    "negative": False,
}
PROBABILITY_WORDS = ("probab", "likelihood", "confidence", "certainty")
GENERIC_NAMES = {"presence", "finding", "presence of finding", "present"}


class MalformedAiResult(ValueError):
    """An object that claims to be an AI result but cannot be read as one (quarantined, 0xC210)."""


def ai_facts_read(ds: Dataset, sop_class_uid: str) -> AiResultFacts | None:
    """The AI result in ``ds`` (the receive path's parse), None when the object is not one. Raises
    MalformedAiResult."""
    if sop_class_uid not in AI_OBJECT_CLASSES:
        return None
    try:
        if sop_class_uid == SEG_CLASS:
            return _seg_facts(ds)
        if sop_class_uid == KOS_CLASS:
            return _kos_facts(ds)
        return _sr_facts(ds)
    except MalformedAiResult:
        raise
    except (InvalidDicomError, ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise MalformedAiResult(f"AI result unreadable: {type(exc).__name__}: {exc}") from exc


def _code(concept) -> tuple[str, str]:
    return str(concept.scheme_designator), str(concept.value)


def _device_observer(content) -> tuple[str, str] | None:
    """(manufacturer, model) of the document's device observer; None when a person observed."""
    for item in _items(content):
        if getattr(item, "ValueType", "") != "CODE" or _name(item) != ("DCM", "121005"):
            continue
        if item.ConceptCodeSequence[0].CodeValue == "121007":  # Observer Type = Device
            return _text(content, "121014"), _text(content, "121015")  # manufacturer, model name
        return None
    return None


def _items(content):
    for item in content:
        yield item
        yield from _items(getattr(item, "ContentSequence", []))


def _name(item) -> tuple[str, str]:
    code = item.ConceptNameCodeSequence[0]
    return str(code.CodingSchemeDesignator), str(code.CodeValue)


def _text(content, code_value: str) -> str:
    for item in _items(content):
        if _name(item) == ("DCM", code_value) and getattr(item, "ValueType", "") in ("TEXT", "UIDREF"):
            return str(getattr(item, "TextValue", "") or getattr(item, "UID", ""))
    return ""


def _sr_facts(ds: Dataset) -> AiResultFacts | None:
    root = ds.ConceptNameCodeSequence[0].CodeValue if "ConceptNameCodeSequence" in ds else ""
    if root != IMAGING_MEASUREMENT_REPORT:
        return None  # a dose report, a reader's text SR …: not an AI result
    observer = _device_observer(ds.ContentSequence)
    if observer is None:
        return None  # a person made it (a reader's OHIF measurements)
    try:
        report = hd.sr.srread(BytesIO(_bytes(ds))).content
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise MalformedAiResult(f"TID 1500 report invalid: {exc}") from exc
    if not isinstance(report, hd.sr.MeasurementReport):
        raise MalformedAiResult("SR is not a TID 1500 measurement report")
    evidence = tuple(_evidence_uids(ds))
    versions = ds.get("SoftwareVersions", "")
    version_default = versions[0] if isinstance(versions, list | tuple) and versions else str(versions or "")
    findings, version = [], ""
    groups = (
        report.get_image_measurement_groups()
        + report.get_planar_roi_measurement_groups()
        + report.get_volumetric_roi_measurement_groups()
    )
    for group in groups:
        finding = _group_finding(group, evidence)
        if finding is not None:
            findings.append(finding)
        version = version or _algorithm_version(group)
    if not findings:
        raise MalformedAiResult("TID 1500 report from a device with no coded finding")
    manufacturer, model = observer
    return AiResultFacts(
        source="sr",
        study_instance_uid=str(ds.StudyInstanceUID),
        accession_number=str(ds.get("AccessionNumber", "")),
        manufacturer=manufacturer or str(ds.get("Manufacturer", "")),
        model=model or str(ds.get("ManufacturerModelName", "")),
        version=version or version_default,
        findings=tuple(findings),
        sop_instance_uid=str(ds.SOPInstanceUID),
        referenced_sop_instance_uids=evidence,
    )


def _bytes(ds: Dataset) -> bytes:
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _algorithm_version(group) -> str:
    for item in _items(group.ContentSequence if hasattr(group, "ContentSequence") else group):
        if _name(item) == ("DCM", "111003"):  # Algorithm Version (TID 4019)
            return str(item.TextValue)
    return ""


def _group_finding(group, evidence: tuple[str, ...]) -> AiFindingFacts | None:
    concept = group.finding_type
    present = True
    for evaluation in group.get_qualitative_evaluations():
        value = evaluation.value
        key = _code(value)
        word = PRESENCE_WORDS.get(str(value.meaning).strip().lower())
        said = True if key in PRESENT else False if key in ABSENT else word
        if said is None:
            continue
        present = said
        if concept is None and str(evaluation.name.meaning).strip().lower() not in GENERIC_NAMES:
            concept = evaluation.name
    if concept is None:
        return None
    probability = None
    for measurement in group.get_measurements():
        if (
            any(w in str(measurement.name.meaning).lower() for w in PROBABILITY_WORDS)
            and measurement.value is not None
        ):
            value = float(measurement.value)
            probability = value / 100 if str(measurement.unit.value) == "%" else value
    if probability is not None and not 0 <= probability <= 1:
        raise MalformedAiResult(f"probability {probability} outside 0–1")
    images = tuple(_source_images(group)) or evidence
    scheme, code = _code(concept)
    return AiFindingFacts(code, scheme, str(concept.meaning), present, probability, images)


def _source_images(group) -> list[str]:
    uids = []
    for item in _items(group.ContentSequence if hasattr(group, "ContentSequence") else group):
        if getattr(item, "ValueType", "") == "IMAGE":
            uids.append(str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
    return list(dict.fromkeys(uids))


def _evidence_uids(ds: Dataset) -> list[str]:
    uids = []
    for name in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in ds.get(name, []):
            for series in study.get("ReferencedSeriesSequence", []):
                uids += [str(i.ReferencedSOPInstanceUID) for i in series.get("ReferencedSOPSequence", [])]
    return list(dict.fromkeys(uids))


def _seg_facts(ds: Dataset) -> AiResultFacts | None:
    """A segmentation made by an algorithm (Segment Algorithm Type AUTOMATIC or SEMIAUTOMATIC): one
    present finding per segment, its code the Segmented Property Type."""
    segments = [
        s for s in ds.SegmentSequence if s.get("SegmentAlgorithmType", "") in ("AUTOMATIC", "SEMIAUTOMATIC")
    ]
    if not segments:
        return None
    referenced = []
    for series in ds.get("ReferencedSeriesSequence", []):
        referenced += [str(i.ReferencedSOPInstanceUID) for i in series.get("ReferencedInstanceSequence", [])]
    findings = []
    for segment in segments:
        code = segment.SegmentedPropertyTypeCodeSequence[0]
        findings.append(
            AiFindingFacts(
                str(code.CodeValue),
                str(code.CodingSchemeDesignator),
                str(code.CodeMeaning),
                True,
                None,
                tuple(referenced),
            )
        )
    first = segments[0]
    return AiResultFacts(
        source="seg",
        study_instance_uid=str(ds.StudyInstanceUID),
        accession_number=str(ds.get("AccessionNumber", "")),
        manufacturer=str(ds.get("Manufacturer", "")),
        model=str(first.get("SegmentAlgorithmName", "") or ds.get("ManufacturerModelName", "")),
        version=str(ds.get("SoftwareVersions", "") or ""),
        findings=tuple(findings),
        sop_instance_uid=str(ds.SOPInstanceUID),
        referenced_sop_instance_uids=tuple(dict.fromkeys(referenced)),
    )


def _kos_facts(ds: Dataset) -> AiResultFacts | None:
    """A key object selection from a device: the flagged images, no finding of its own (it adds the
    images to the study's AI results; docs/ai.md)."""
    if _device_observer(ds.get("ContentSequence", [])) is None and not ds.get("Manufacturer"):
        return None
    evidence = tuple(_evidence_uids(ds))
    return AiResultFacts(
        source="kos",
        study_instance_uid=str(ds.StudyInstanceUID),
        accession_number=str(ds.get("AccessionNumber", "")),
        manufacturer=str(ds.get("Manufacturer", "")),
        model=str(ds.get("ManufacturerModelName", "")),
        version=str(ds.get("SoftwareVersions", "") or ""),
        findings=(),
        sop_instance_uid=str(ds.SOPInstanceUID),
        referenced_sop_instance_uids=evidence,
    )
