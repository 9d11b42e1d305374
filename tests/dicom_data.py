"""Real DICOM test data: series generated from pydicom's bundled CT_small.dcm (STANDARDS.md §6 — no
package ships a realistic multi-slice series). Each generated instance is a valid Part 10 file
with new Study/Series/SOP UIDs, an accession number, InstanceNumber and ImagePositionPatient.

CT_small is 128x128, int16, RescaleSlope 1 / RescaleIntercept -1024, MONOCHROME2, Explicit VR
Little Endian. ``size=512`` upsamples it (nearest neighbour) to the size of a real CT slice."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from io import BytesIO

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from interfaces.simulator import series_generate

# pydicom's own UID root: generated UIDs are valid and globally unique (2.25 would do as well).
UID_PREFIX = "1.2.826.0.1.3680043.8.498."


@dataclass(frozen=True)
class GeneratedSeries:
    study_uid: str
    series_uid: str
    accession: str
    patient_id: str
    datasets: tuple[Dataset, ...]

    def part10(self) -> list[bytes]:
        return [part10_bytes(ds) for ds in self.datasets]

    @property
    def sop_uids(self) -> list[str]:
        return [str(ds.SOPInstanceUID) for ds in self.datasets]


def part10_bytes(ds: Dataset) -> bytes:
    """The dataset as a DICOM Part 10 file (preamble, DICM, file meta), as a modality sends it."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def ct_series(
    *,
    count: int = 5,
    accession: str = "ACC1001",
    patient_id: str = "MRN-4711",
    patient_name: str = "QUINLAN^JANE",
    birth_date: str = "19580214",
    sex: str = "F",
    study_uid: str | None = None,
    study_description: str = "CT HEAD WO CONTRAST",
    series_description: str = "AXIAL 5MM",
    series_number: int = 2,
    study_date: str = "20250301",
    study_time: str = "031500",
    size: int = 128,
    phantom: str | None = None,
) -> GeneratedSeries:
    """One CT series of ``count`` slices, 5 mm apart, generated the way the facility simulator does.
    Each slice's pixels differ a little, so instances are distinguishable after rendering. With
    ``phantom`` (interfaces.phantoms: "head" …) the slices are that phantom's, with its geometry."""
    study_uid = study_uid or generate_uid(prefix=UID_PREFIX)
    attributes = {
        "AccessionNumber": accession,
        "PatientID": patient_id,
        "PatientName": patient_name,
        "PatientBirthDate": birth_date,
        "PatientSex": sex,
        "StudyDescription": study_description,
        "SeriesDescription": series_description,
        "BodyPartExamined": "HEAD",
        "StudyDate": study_date,
        "SeriesDate": study_date,
        "ContentDate": study_date,
        "StudyTime": study_time,
        "SeriesTime": study_time,
        "ContentTime": study_time,
        "SeriesNumber": series_number,
    }
    datasets = list(
        series_generate(
            modality="CT",
            count=count,
            study_uid=study_uid,
            attributes=attributes,
            size=size,
            pixel_step=10,
            phantom=phantom,
        )
    )
    series_uid = str(datasets[0].SeriesInstanceUID)
    return GeneratedSeries(study_uid, series_uid, accession, patient_id, tuple(datasets))


def with_hounsfield(
    ds: Dataset,
    hu: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    slope: float = 1.0,
    intercept: float = -1024,
) -> Dataset:
    """A copy of ``ds`` whose pixels are the given Hounsfield values (stored = (HU − intercept) / slope),
    for rendering tests that need known input values."""
    out = copy.deepcopy(ds)
    stored = np.round((hu.astype(np.float64) - intercept) / slope).astype(np.int16)
    out.Rows, out.Columns = stored.shape
    out.RescaleSlope, out.RescaleIntercept = slope, intercept
    out.PhotometricInterpretation = photometric
    out.PixelData = stored.tobytes()
    return out
