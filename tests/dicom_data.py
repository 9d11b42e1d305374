"""Real DICOM test data: series generated from pydicom's bundled CT_small.dcm (STANDARDS.md §6 — no
package ships a realistic multi-slice series). Each generated instance is a valid Part 10 file
with new Study/Series/SOP UIDs, an accession number, InstanceNumber and ImagePositionPatient.

CT_small is 128x128, int16, RescaleSlope 1 / RescaleIntercept -1024, MONOCHROME2, Explicit VR
Little Endian. ``size=512`` upsamples it (nearest neighbour) to the size of a real CT slice."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cache
from io import BytesIO

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid

# pydicom's own UID root: generated UIDs are valid and globally unique (2.25 would do as well).
UID_PREFIX = "1.2.826.0.1.3680043.8.498."


@cache
def _ct_small() -> Dataset:
    return dcmread(get_testdata_file("CT_small.dcm"))


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
) -> GeneratedSeries:
    """One CT series of ``count`` slices, 5 mm apart. Each slice's pixels differ a little, so
    instances are distinguishable after rendering."""
    template = _ct_small()
    base = template.pixel_array.astype(np.int32)
    factor = max(1, size // base.shape[0])
    pixels = np.kron(base, np.ones((factor, factor), dtype=np.int32)) if factor > 1 else base
    study_uid = study_uid or generate_uid(prefix=UID_PREFIX)
    series_uid = generate_uid(prefix=UID_PREFIX)
    frame_uid = generate_uid(prefix=UID_PREFIX)
    datasets = []
    for number in range(1, count + 1):
        # deepcopy: Dataset.copy() is shallow — the copies would share (and overwrite) each
        # other's data elements, leaving every "slice" with the last one's UIDs.
        ds = copy.deepcopy(template)
        sop_uid = generate_uid(prefix=UID_PREFIX)
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.AccessionNumber = accession
        ds.PatientID, ds.PatientName = patient_id, patient_name
        ds.PatientBirthDate, ds.PatientSex = birth_date, sex
        ds.StudyDescription, ds.SeriesDescription = study_description, series_description
        ds.Modality, ds.BodyPartExamined = "CT", "HEAD"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = study_time
        ds.SeriesNumber, ds.InstanceNumber = series_number, number
        ds.ImagePositionPatient = [-125.0, -125.0, float(number * 5)]
        ds.SliceLocation = float(number * 5)
        slice_pixels = (pixels + number * 10).astype(np.int16)
        ds.Rows, ds.Columns = slice_pixels.shape
        ds.PixelData = slice_pixels.tobytes()
        datasets.append(ds)
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
