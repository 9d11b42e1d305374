"""AI results as the vendors send them, made with highdicom (TID 1500 with a device observer) and as
HL7 ORU^R01 text (OBX with coded findings): real objects, as in the IHE AI Results profile."""

from __future__ import annotations

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from tests.dicom_data import UID_PREFIX

ICH = hd.sr.CodedConcept("274100004", "SCT", "Cerebral hemorrhage")
PE = hd.sr.CodedConcept("59282003", "SCT", "Pulmonary embolism")
LVO = hd.sr.CodedConcept("20059004", "SCT", "Occlusion of cerebral artery")
PRESENT = hd.sr.CodedConcept("52101004", "SCT", "Present")
ABSENT = hd.sr.CodedConcept("2667000", "SCT", "Absent")
PROBABILITY = hd.sr.CodedConcept("C0033204", "UMLS", "Probability")


def ai_sr(
    images: list[Dataset],
    *,
    finding: hd.sr.CodedConcept = ICH,
    present: bool = True,
    probability: float | None = 0.93,
    manufacturer: str = "Aidoc",
    model: str = "BriefCase ICH",
    version: str = "2.1",
) -> Dataset:
    """A TID 1500 measurement report from an algorithm about ``images`` (one CT series): the
    facility simulator's AI node builder (``interfaces.simulator.ai_sr_dataset``)."""
    from interfaces.simulator import ai_sr_dataset

    return ai_sr_dataset(
        images, code=finding.value, meaning=finding.meaning, present=present, probability=probability,
        manufacturer=manufacturer, model=model, version=version,
    )  # fmt: skip


def ai_oru(
    *,
    accession: str,
    control_id: str = "AI0001",
    code: str = "274100004",
    meaning: str = "Cerebral hemorrhage",
    present: bool = True,
    probability: float | None = 0.93,
    app: str = "AIDOC",
    facility: str = "LAKESHORE",
    study_uid: str = "",
) -> str:
    """An AI node's ORU^R01: OBX-3 the finding (SNOMED CT), OBX-5 Present/Absent, a probability OBX,
    the algorithm in OBX-18 (equipment instance identifier: manufacturer^model^version)."""
    value = "52101004^Present^SCT" if present else "2667000^Absent^SCT"
    segments = [
        f"MSH|^~\\&|{app}|{facility}|READROOM|READROOM|20250301031800||ORU^R01|{control_id}|P|2.5.1",
        "PID|1||MRN-4711^^^LAKESHORE||QUINLAN^JANE||19580214|F",
        f"OBR|1||{accession}|70450^CT HEAD WO CONTRAST^C4|||20250301031500||||||||||||{accession}||||||F",
        f"OBX|1|CWE|{code}^{meaning}^SCT||{value}||||||F|||20250301031800||||Aidoc^BriefCase ICH^2.1",
    ]
    if probability is not None:
        segments.append(
            f"OBX|2|NM|C0033204^Probability^UMLS|1|{probability}|1^no units^UCUM|||||F|||20250301031800"
            "||||Aidoc^BriefCase ICH^2.1"
        )
    if study_uid:
        segments.append(f"OBX|3|ST|110180^Study Instance UID^DCM||{study_uid}||||||F")
    return "\r".join(segments) + "\r"


def ai_seg(
    images: list[Dataset], *, finding: hd.sr.CodedConcept = ICH, manufacturer: str = "Aidoc",
    model: str = "BriefCase ICH", version: str = "2.1",
) -> Dataset:  # fmt: skip
    """A binary segmentation of ``finding`` on the middle image, by an algorithm (AUTOMATIC)."""
    import numpy as np

    flagged = images[len(images) // 2]
    mask = np.zeros((1, flagged.Rows, flagged.Columns), dtype=np.uint8)
    mask[0, 10:30, 10:30] = 1
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=finding.meaning,
        segmented_property_category=hd.sr.CodedConcept(
            "49755003", "SCT", "Morphologically Altered Structure"
        ),
        segmented_property_type=finding,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=model, version=version, family=codes.cid7162.ArtificialIntelligence
        ),
    )
    return hd.seg.Segmentation(
        source_images=[flagged],
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=generate_uid(prefix=UID_PREFIX),
        series_number=901,
        sop_instance_uid=generate_uid(prefix=UID_PREFIX),
        instance_number=1,
        manufacturer=manufacturer,
        manufacturer_model_name=model,
        software_versions=version,
        device_serial_number="AI-1",
    )


def ai_kos(images: list[Dataset], *, manufacturer: str = "Aidoc") -> Dataset:
    """A key object selection from an algorithm flagging the middle image."""
    flagged = images[len(images) // 2]
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(prefix=UID_PREFIX), manufacturer_name=manufacturer, model_name="BriefCase ICH"
        ),
    )
    content = hd.ko.KeyObjectSelection(
        document_title=codes.DCM.OfInterest, referenced_objects=[flagged], observer_device_context=device
    )
    return hd.ko.KeyObjectSelectionDocument(
        evidence=[flagged],
        content=content,
        series_instance_uid=generate_uid(prefix=UID_PREFIX),
        series_number=902,
        sop_instance_uid=generate_uid(prefix=UID_PREFIX),
        instance_number=1,
        manufacturer=manufacturer,
    )
