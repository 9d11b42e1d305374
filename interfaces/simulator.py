"""A facility simulator: realistic orders and CT/MR/XR series sent through the real MLLP and DICOM
ports — the "dummy patient" go-live rehearsal a new facility runs, and what `make demo` shows.

Images are generated from pydicom's bundled test files (CT_small, MR_small): new UIDs, 512×512
slices, plausible descriptions, positions and instance numbers. A code stroke now and then."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
from hl7.mllp import open_hl7_connection
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ComputedRadiographyImageStorage, CTImageStorage, MRImageStorage

log = logging.getLogger(__name__)

UID_ROOT = "1.2.826.0.1.3680043.10.1381."  # a generate_uid prefix for ReadRoom's synthetic objects


@dataclass(frozen=True)
class Procedure:
    code: str
    text: str
    modality: str
    body_part: str
    slices: int  # a realistic count, scaled down by the caller when wanted


PROCEDURES = (
    Procedure("70450", "CT HEAD W/O CONTRAST", "CT", "HEAD", 40),
    Procedure("70496", "CTA HEAD W/WO CONTRAST", "CT", "HEAD", 60),
    Procedure("74177", "CT ABDOMEN PELVIS W CONTRAST", "CT", "ABDOMEN", 80),
    Procedure("71260", "CT CHEST W CONTRAST", "CT", "CHEST", 60),
    Procedure("70551", "MRI BRAIN W/O CONTRAST", "MR", "HEAD", 24),
    Procedure("73721", "MRI KNEE W/O CONTRAST", "MR", "KNEE", 20),
    Procedure("71045", "XR CHEST 1 VIEW", "CR", "CHEST", 1),
    Procedure("73560", "XR KNEE 2 VIEWS", "CR", "KNEE", 2),
)
STROKE_PROCEDURE = PROCEDURES[0]
FAMILY = (
    "NOVAK",
    "ORTIZ",
    "NGUYEN",
    "KOWALSKI",
    "JOHNSON",
    "OKAFOR",
    "LINDQVIST",
    "HERRERA",
    "BAKER",
    "SCHULTZ",
)
GIVEN = ("MARIA", "JAMES", "LINH", "PETER", "ANNA", "DAVID", "GRACE", "MIGUEL", "RUTH", "TOMAS")
REASONS = ("FALL", "ABDOMINAL PAIN", "SHORTNESS OF BREATH", "KNEE PAIN AFTER TWIST", "HEADACHE", "FOLLOW-UP")


@dataclass(frozen=True)
class SimulatedExam:
    facility_code: str
    mrn: str
    family_name: str
    given_name: str
    birth_date: str  # YYYYMMDD
    sex: str
    accession: str
    procedure: Procedure
    priority: str  # HL7: S, A, R
    reason: str
    patient_class: str  # E, I, O
    study_uid: str

    @property
    def is_stroke(self) -> bool:
        return "CODE STROKE" in self.reason


def exam_random(rng: random.Random, facility_code: str, *, stroke_rate: float = 0.15) -> SimulatedExam:
    stroke = rng.random() < stroke_rate
    procedure = STROKE_PROCEDURE if stroke else rng.choice(PROCEDURES)
    ed = stroke or rng.random() < 0.4
    return SimulatedExam(
        facility_code=facility_code,
        mrn=f"SIM{rng.randrange(10**6):06d}",
        family_name=rng.choice(FAMILY),
        given_name=rng.choice(GIVEN),
        birth_date=f"{rng.randrange(1930, 2020)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}",
        sex=rng.choice("FM"),
        accession=f"S{rng.randrange(10**9):09d}",
        procedure=procedure,
        priority="S" if ed else rng.choice("AR"),
        reason="CODE STROKE - LEFT FACIAL DROOP, LKW 45 MIN" if stroke else rng.choice(REASONS),
        patient_class="E" if ed else rng.choice("IO"),
        study_uid=generate_uid(prefix=UID_ROOT),
    )


def order_message(
    exam: SimulatedExam, sender: tuple[str, str], control_id: str, now: datetime | None = None
) -> bytes:
    """ORM^O01 v2.5.1 as a RIS sends it (IHE RAD-4): accession OBR-18, modality OBR-24, ZDS Study UID."""
    stamp = (now or datetime.now()).strftime("%Y%m%d%H%M%S")
    p = exam.procedure
    segments = [
        f"MSH|^~\\&|{sender[0]}|{sender[1]}|READROOM|READROOM|{stamp}||ORM^O01^ORM_O01|{control_id}|P|2.5.1",
        f"PID|1||{exam.mrn}^^^{sender[1]}^MR||{exam.family_name}^{exam.given_name}||{exam.birth_date}|{exam.sex}",
        f"PV1|1|{exam.patient_class}|{'ED' if exam.patient_class == 'E' else 'RAD'}^^^{sender[1]}",
        f"ORC|NW|P{exam.accession}^RIS|F{exam.accession}^RIS||SC||^^^{stamp}^^{exam.priority}||{stamp}|||"
        "9988776^HOUSE^GREGORY^^^DR",
        f"OBR|1|P{exam.accession}^RIS|F{exam.accession}^RIS|{p.code}^{p.text}^C4|||||||||{exam.reason}|||"
        f"9988776^HOUSE^GREGORY^^^DR||{exam.accession}|RP{exam.accession}|SPS{exam.accession}||||{p.modality}|||"
        f"^^^{stamp}^^{exam.priority}||||^{exam.reason}",
        f"ZDS|{exam.study_uid}^READROOM^Application^DICOM",
    ]
    return ("\r".join(segments) + "\r").encode()


_TEMPLATES: dict[str, Dataset] = {}


def _template(modality: str) -> Dataset:
    name = "MR_small.dcm" if modality == "MR" else "CT_small.dcm"
    if name not in _TEMPLATES:
        _TEMPLATES[name] = dcmread(get_testdata_file(name))
    return _TEMPLATES[name]


def series_generate(
    *,
    modality: str,
    count: int,
    study_uid: str,
    attributes: dict[str, object],
    size: int = 512,
    pixel_step: int = 3,
) -> Iterator[Dataset]:
    """``count`` instances of one series from the bundled test image for ``modality``: new Series,
    Frame of Reference and SOP Instance UIDs, instance numbers and positions 5 mm apart, pixels
    upsampled (nearest neighbour) to ``size`` and shifted by ``pixel_step`` per slice so slices
    differ. ``attributes`` (keyword → value) describe the patient and the exam."""
    template = _template(modality)
    sop_class = {"CT": CTImageStorage, "MR": MRImageStorage}.get(modality, ComputedRadiographyImageStorage)
    base = template.pixel_array.astype(np.int32)
    factor = max(1, size // base.shape[0])
    pixels = np.kron(base, np.ones((factor, factor), dtype=np.int32)) if factor > 1 else base
    series_uid = generate_uid(prefix=UID_ROOT)
    frame_uid = generate_uid(prefix=UID_ROOT)
    for number in range(1, count + 1):
        # a deep copy: Dataset.copy() shares data elements with the cached template
        ds = copy.deepcopy(template)
        sop_uid = generate_uid(prefix=UID_ROOT)
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality, ds.InstanceNumber = modality, number
        ds.ImagePositionPatient = [-125.0, -125.0, float(number * 5)]
        ds.SliceLocation = float(number * 5)
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        slice_pixels = np.clip(pixels + number * pixel_step, -32768, 32767).astype(template.pixel_array.dtype)
        ds.Rows, ds.Columns = slice_pixels.shape
        ds.PixelData = slice_pixels.tobytes()
        yield ds


def series_datasets(
    exam: SimulatedExam,
    *,
    slices: int | None = None,
    max_slices: int | None = None,
    size: int = 512,
    now: datetime | None = None,
) -> Iterator[Dataset]:
    """One series for the exam: ``slices`` instances, or the procedure's realistic count capped at
    ``max_slices``. ``now`` is the modality's wall clock: DICOM dates and times are local, without a
    zone, so it must be the facility's local time."""
    procedure = exam.procedure
    count = slices if slices is not None else min(procedure.slices, max_slices or procedure.slices)
    now = now or datetime.now()
    views = ("AP", "LAT")
    for ds in series_generate(
        modality=procedure.modality,
        count=count,
        study_uid=exam.study_uid,
        size=size,
        attributes={
            "BodyPartExamined": procedure.body_part,
            "StudyDescription": procedure.text[:64],
            "AccessionNumber": exam.accession,
            "PatientID": exam.mrn,
            "IssuerOfPatientID": "",
            "PatientName": f"{exam.family_name}^{exam.given_name}",
            "PatientBirthDate": exam.birth_date,
            "PatientSex": exam.sex,
            "StudyDate": now.strftime("%Y%m%d"),
            "SeriesDate": now.strftime("%Y%m%d"),
            "ContentDate": now.strftime("%Y%m%d"),
            "StudyTime": now.strftime("%H%M%S"),
            "SeriesTime": now.strftime("%H%M%S"),
            "ContentTime": now.strftime("%H%M%S"),
            "SeriesNumber": 2,
            "InstitutionName": exam.facility_code,
        },
    ):
        ds.SeriesDescription = {"CT": "AXIAL 5MM", "MR": "AX T2"}.get(
            procedure.modality, views[(ds.InstanceNumber - 1) % 2]
        )
        yield ds


def series_send(
    datasets: Iterator[Dataset], *, host: str, port: int, calling_ae: str, called_ae: str = "READROOM"
) -> list[int]:
    """C-STORE the series over one association (one association per study, STANDARDS.md §3)."""
    ae = AE(ae_title=calling_ae)
    for sop_class in (CTImageStorage, MRImageStorage, ComputedRadiographyImageStorage):
        ae.add_requested_context(sop_class)
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        raise ConnectionError(f"association with {called_ae}@{host}:{port} refused")
    try:
        # each request in an association carries its own Message ID (PS3.7 §9.1.1.1)
        return [
            int(getattr(assoc.send_c_store(ds, msg_id=n), "Status", 0xFFFF))
            for n, ds in enumerate(datasets, 1)
        ]
    finally:
        assoc.release()


async def order_send(message: bytes, *, host: str, port: int) -> bytes:
    reader, writer = await open_hl7_connection(host, port)
    try:
        writer.writeblock(message)
        await writer.drain()
        return await asyncio.wait_for(reader.readblock(), 30)
    finally:
        writer.close()


@dataclass(frozen=True)
class SimulatedFacility:
    code: str
    hl7_sender: tuple[str, str]
    calling_ae: str
    timezone: str = "UTC"  # the hospital's wall clock, which its RIS and modalities write

    def local_now(self) -> datetime:
        """Naive local time, as HL7 TS without an offset and DICOM DA/TM carry it (the receiver reads
        them in the facility's zone: the server's own zone would put a Chicago exam hours off)."""
        return datetime.now(ZoneInfo(self.timezone)).replace(tzinfo=None)


async def exam_simulate(
    exam: SimulatedExam,
    facility: SimulatedFacility,
    *,
    host: str,
    hl7_port: int,
    dicom_port: int,
    slices: int | None = None,
    max_slices: int | None = None,
    control_id: str,
) -> tuple[bytes, list[int]]:
    """Order first, then the images — or, for a stroke, images right behind the order."""
    now = facility.local_now()
    message = order_message(exam, facility.hl7_sender, control_id, now=now)
    ack = await order_send(message, host=host, port=hl7_port)
    statuses = await asyncio.to_thread(
        series_send,
        series_datasets(exam, slices=slices, max_slices=max_slices, now=now),
        host=host,
        port=dicom_port,
        calling_ae=facility.calling_ae,
    )
    return ack, statuses


async def simulator_service(
    stop: asyncio.Event,
    *,
    facilities: list[SimulatedFacility],
    host: str,
    hl7_port: int,
    dicom_port: int,
    interval_seconds: float = 45.0,
    max_slices: int | None = 12,
    seed: int | None = None,
) -> None:
    """Send an exam from a random facility every ``interval_seconds`` until ``stop`` is set."""
    rng = random.Random(seed)
    sent = 0
    # let the listeners of the same process come up before the first exam
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=min(5.0, interval_seconds))
    while not stop.is_set():
        facility = rng.choice(facilities)
        exam = exam_random(rng, facility.code)
        try:
            ack, statuses = await exam_simulate(
                exam,
                facility,
                host=host,
                hl7_port=hl7_port,
                dicom_port=dicom_port,
                max_slices=max_slices,
                control_id=f"SIM{sent:08d}{rng.randrange(10**4):04d}",
            )
            msa = next((seg for seg in ack.split(b"\r") if seg.startswith(b"MSA")), b"MSA|?").split(b"|")
            log.info(
                "simulated %s %s at %s: %s, %d images stored",
                exam.accession,
                exam.procedure.text,
                facility.code,
                msa[1].decode(),
                sum(status == 0 for status in statuses),
            )
        except (OSError, ConnectionError, TimeoutError) as exc:
            log.warning("simulator could not send to %s: %s", facility.code, exc)
        sent += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_seconds)
