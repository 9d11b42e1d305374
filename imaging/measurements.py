"""The measurements a reader saved from OHIF (a TID 1500 measurement report, stored by STOW-RS into a
series the reader made: ``Series.made_by``), as lines the report editor can insert:
"Lesion 1: 23 mm, series 3 image 41".

Parsed with highdicom (the field's reader of SR templates): measurement groups, their tracking
identifier (OHIF names the tool there: ``Cornerstone3DTools@^0.1.0:Length``), the finding
(OHIF's label), the measurements with their units. The image a measurement was made on is the
IMAGE item its SCOORD was selected from; the series and image numbers come from our index.
Each save of OHIF's report holds every tracked measurement, so a measurement (tracking UID) saved
twice is listed once, from the newest save."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO

import highdicom as hd
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from imaging.models import Instance, Study
from imaging.storage import StorageError, encrypted_read

log = logging.getLogger(__name__)

SR_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR (what OHIF 3.13 writes)
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
)
# UCUM units as a reader writes them
UNIT_TEXT = {"mm": "mm", "mm2": "mm²", "cm": "cm", "cm2": "cm²", "deg": "°", "[hnsf'U]": "HU", "{ratio}": ""}
# OHIF's tool names as a reader calls the measurement when it has no label
TOOL_NAMES = {
    "Length": "Length",
    "Bidirectional": "Bidirectional",
    "EllipticalROI": "ROI",
    "CircleROI": "ROI",
    "RectangleROI": "ROI",
    "PlanarFreehandROI": "ROI",
    "Angle": "Angle",
    "CobbAngle": "Cobb angle",
    "ArrowAnnotate": "Arrow",
    "Probe": "Point",
}
# ROI statistics in the order a report gives them; other measurements follow in the SR's order
STATISTICS = ("Area", "Mean", "Standard Deviation", "Minimum", "Maximum")


@dataclass(frozen=True)
class SavedMeasurement:
    text: str  # "Lesion 1: 23 mm, series 3 image 41"
    label: str
    series_number: int | None
    instance_number: int | None
    saved_at: datetime
    saved_by: str
    tracking_uid: str


def _number(value: float) -> str:
    value = float(value)
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.1f}"


def _measurement_text(name: str, value: float, unit: str) -> str:
    unit_text = UNIT_TEXT.get(unit, unit)
    amount = f"{_number(value)}{'' if unit_text in ('°', '') else ' '}{unit_text}"
    if name == "Standard Deviation":
        return f"SD {amount}"
    # a length or an angle is the measurement itself ("Lesion 1: 23 mm"); OHIF calls its angle "Cobb angle"
    if not name or name in ("Length", "Long Axis") or name.lower().endswith("angle"):
        return amount
    return f"{name.lower()} {amount}"


def _source_image(items) -> tuple[str, int | None]:
    """SOP Instance UID and frame of the first IMAGE item under the measurement (OHIF's writer
    nests it: NUM → INFERRED FROM SCOORD → SELECTED FROM IMAGE)."""
    for item in items:
        if item.get("ValueType") == "IMAGE" and "ReferencedSOPSequence" in item:
            ref = item.ReferencedSOPSequence[0]
            frames = ref.get("ReferencedFrameNumber")  # IS, one or more values
            frame = int(frames[0] if isinstance(frames, MultiValue) else frames) if frames else None
            return str(ref.ReferencedSOPInstanceUID), frame
        found = _source_image(item.get("ContentSequence", []))
        if found[0]:
            return found
    return "", None


@dataclass(frozen=True)
class _Group:
    label: str
    tool: str
    parts: list[str]
    series_number: int | None
    instance_number: int | None
    frame: int | None
    tracking_uid: str


def _groups(report, instances: dict[str, tuple[int | None, int | None]]) -> list[_Group]:
    lines = []
    for group in report.get_image_measurement_groups() + report.get_planar_roi_measurement_groups():
        tracking_id = str(group.tracking_identifier or "")
        tool = tracking_id.rsplit(":", 1)[-1]
        finding = group.finding_type
        label = str(finding.meaning) if finding is not None else ""
        measurements = list(group.get_measurements())
        if not measurements:
            continue
        order = {name: i for i, name in enumerate(STATISTICS)}
        measurements.sort(key=lambda m: order.get(str(m.name.meaning), len(order)))
        parts = [
            _measurement_text(str(m.name.meaning), m.value, str(m.unit.value))
            for m in measurements
            if m.value is not None
        ]
        image_uid, frame = next((found for m in measurements if (found := _source_image(m))[0]), ("", None))
        series_number, instance_number = instances.get(image_uid, (None, None))
        name = TOOL_NAMES.get(tool, tool or "Measurement")
        uid = str(group.tracking_uid or "")
        lines.append(_Group(label, name, parts, series_number, instance_number, frame, uid))
    return lines


def study_measurements(study: Study) -> list[SavedMeasurement]:
    """Every measurement the study's readers saved from the viewer, in the order made."""
    sr_instances = list(
        Instance.objects.filter(
            series__study=study, series__made_by__isnull=False, sop_class_uid__in=SR_CLASSES
        )
        .select_related("series__made_by")
        .order_by("received_at", "id")
    )
    if not sr_instances:
        return []
    numbers = {
        uid: (series_number, number)
        for uid, series_number, number in Instance.objects.filter(series__study=study).values_list(
            "sop_instance_uid", "series__series_number", "instance_number"
        )
    }
    found: dict[str, SavedMeasurement] = {}
    untracked: list[SavedMeasurement] = []
    for sr in sr_instances:
        try:
            report = hd.sr.srread(BytesIO(encrypted_read(sr.storage_path))).content
        except (StorageError, InvalidDicomError, ValueError, TypeError, AttributeError, KeyError) as exc:
            # One unreadable save must not hide the others, nor break the report page.
            log.warning("measurement SR %s cannot be read: %s", sr.sop_instance_uid, exc)
            continue
        if not isinstance(report, hd.sr.MeasurementReport):
            continue
        for g in _groups(report, numbers):
            name = g.label or g.tool
            where = [f"series {g.series_number}"] if g.series_number is not None else []
            where += [f"image {g.instance_number}"] if g.instance_number is not None else []
            where += [f"frame {g.frame}"] if g.frame is not None else []  # a multi-frame instance
            saved = SavedMeasurement(
                text=", ".join([f"{name}: {', '.join(g.parts)}", *([" ".join(where)] if where else [])]),
                label=name,
                series_number=g.series_number,
                instance_number=g.instance_number,
                saved_at=sr.received_at,
                saved_by=str(sr.series.made_by),
                tracking_uid=g.tracking_uid,
            )
            if g.tracking_uid:
                found.pop(g.tracking_uid, None)  # a later save replaces it, in its new place
                found[g.tracking_uid] = saved
            else:
                untracked.append(saved)
    return [*found.values(), *untracked]
