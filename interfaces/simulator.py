"""A facility simulator: realistic orders and CT/MR/XR series sent through the real MLLP and DICOM
ports — the "dummy patient" go-live rehearsal a new facility runs, and what `make demo` shows.

CT, MR brain and radiograph pixels are procedural phantoms that match the procedure
(interfaces/phantoms.py: a head with skull, brain and ventricles, a chest, an abdomen, an MR brain as
an axial T2 and T1 series of the same head, a chest and a knee radiograph) with real HU or MR signal,
pixel spacing, slice geometry and window; the header comes from pydicom's bundled CT_small or
MR_small (an MR knee still shows MR_small's pixels, enlarged). New UIDs, plausible descriptions. A
code stroke now and then."""

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

from interfaces import phantoms

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


# A hospital's mix (issue 19): about 3 % code strokes, some trauma from the ED, mostly routine
# inpatient/outpatient work — not a demo that rings all the time.
STROKE_RATE = 0.03
TRAUMA_RATE = 0.08
ED_RATE = 0.2
TRAUMA_REASON = "TRAUMA - MVC, HIGH SPEED"


def exam_random(
    rng: random.Random,
    facility_code: str,
    *,
    stroke_rate: float = STROKE_RATE,
    trauma_rate: float = TRAUMA_RATE,
) -> SimulatedExam:
    draw = rng.random()
    stroke = draw < stroke_rate
    trauma = not stroke and draw < stroke_rate + trauma_rate
    procedure = STROKE_PROCEDURE if stroke else rng.choice(PROCEDURES)
    ed = stroke or trauma or rng.random() < ED_RATE
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
        reason="CODE STROKE - LEFT FACIAL DROOP, LKW 45 MIN"
        if stroke
        else TRAUMA_REASON
        if trauma
        else rng.choice(REASONS),
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
    phantom: str | None = None,
    seed: int = 0,
    lesion: bool = False,
) -> Iterator[Dataset]:
    """``count`` instances of one series: new Series, Frame of Reference and SOP Instance UIDs and
    instance numbers. With ``phantom`` (a name in phantoms.PHANTOMS) the pixels are that phantom's
    slices with its geometry; without, the bundled test image for ``modality`` upsampled (nearest
    neighbour) to ``size`` and shifted by ``pixel_step`` per slice, positions 5 mm apart.
    ``attributes`` (keyword → value) describe the patient and the exam."""
    template = _template(modality)
    sop_class = {"CT": CTImageStorage, "MR": MRImageStorage}.get(modality, ComputedRadiographyImageStorage)
    series_uid = generate_uid(prefix=UID_ROOT)
    frame_uid = generate_uid(prefix=UID_ROOT)
    if phantom is None:
        base = template.pixel_array.astype(np.int32)
        factor = max(1, size // base.shape[0])
        pixels = np.kron(base, np.ones((factor, factor), dtype=np.int32)) if factor > 1 else base
    for number in range(1, count + 1):
        # a deep copy: Dataset.copy() shares data elements with the cached template
        ds = copy.deepcopy(template)
        sop_uid = generate_uid(prefix=UID_ROOT)
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality, ds.InstanceNumber = modality, number
        if phantom is None:
            ds.ImagePositionPatient = [-125.0, -125.0, float(number * 5)]
            ds.SliceLocation = float(number * 5)
            slice_pixels = np.clip(pixels + number * pixel_step, -32768, 32767).astype(
                template.pixel_array.dtype
            )
        else:
            slice_pixels = phantoms.slice_pixels(
                phantom, number - 1, count, size=size, seed=seed, lesion=lesion
            )
            _phantom_geometry(ds, phantoms.PHANTOMS[phantom], number - 1, count, size)
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        ds.Rows, ds.Columns = slice_pixels.shape
        ds.PixelData = slice_pixels.tobytes()
        yield ds


def _phantom_geometry(ds: Dataset, phantom: phantoms.Phantom, index: int, count: int, size: int) -> None:
    """The attributes a viewer builds its geometry and grey levels from (OHIF's MPR needs a real
    spacing, orientation and positions stepping along z)."""
    spacing = phantoms.pixel_spacing(phantom, size)
    corner = round(-phantom.field_of_view_mm / 2 + spacing / 2, 6)  # the first pixel's centre
    ds.PixelSpacing = [spacing, spacing]
    ds.WindowCenter, ds.WindowWidth = phantom.window
    ds.PhotometricInterpretation, ds.SamplesPerPixel = "MONOCHROME2", 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    if phantom.kind != "MR":
        ds.RescaleSlope = 1
    if phantom.kind == "MR":
        _mr_geometry(ds, phantom, index, count, size)
    elif phantom.kind == "CT":
        thickness = phantoms.slice_thickness(phantom, count)
        z = round((index + 0.5) * thickness, 3)  # inferior to superior, contiguous
        ds.PixelRepresentation, ds.RescaleIntercept = 1, -phantoms.HU_OFFSET
        ds.SliceThickness = ds.SpacingBetweenSlices = thickness
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.ImagePositionPatient = [corner, corner, z]
        ds.SliceLocation = z
    else:
        # a projection: no slice geometry; the detector's spacing (at the detector, as CR has it)
        ds.PixelRepresentation, ds.RescaleIntercept = 0, 0
        ds.ImagerPixelSpacing = [spacing, spacing]
        ds.ViewPosition = ("PA", "LL")[index % 2] if phantom.name == "cxr" else ("AP", "LL")[index % 2]
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "SliceLocation", "SliceThickness"):
            if keyword in ds:
                delattr(ds, keyword)


# 1.5 T spin-echo timings by contrast: (sequence, variant, options, TR ms, TE ms, echo train, flip)
MR_SEQUENCES = {
    "t2": ("SE", "SK", "FAST_GEMS", 4000.0, 100.0, 16, 90, "AX T2 FSE"),
    "t1": ("SE", "NONE", "", 500.0, 12.0, 1, 90, "AX T1 SE"),
}


def _mr_geometry(ds: Dataset, phantom: phantoms.Phantom, index: int, count: int, size: int) -> None:
    """An axial 2-D spin-echo slice: unsigned 12-bit magnitude (no Modality LUT: MR has no units),
    slices with a gap, and the acquisition parameters a reader checks the contrast by."""
    spacing = phantoms.slice_spacing(phantom, count)
    thickness = phantoms.slice_thickness(phantom, count)
    pixel = phantoms.pixel_spacing(phantom, size)
    corner = round(-phantom.field_of_view_mm / 2 + pixel / 2, 6)
    z = round((index + 0.5) * spacing, 3)
    ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 0, 12, 11
    for keyword in ("RescaleSlope", "RescaleIntercept", "SmallestImagePixelValue", "LargestImagePixelValue"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.ImagePositionPatient = [corner, corner, z]
    ds.SliceLocation = z
    ds.SliceThickness, ds.SpacingBetweenSlices = thickness, spacing
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    sequence, variant, options, tr, te, train, flip, _ = MR_SEQUENCES[phantom.sequence]
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = sequence, variant, options
    ds.MRAcquisitionType, ds.RepetitionTime, ds.EchoTime = "2D", tr, te
    ds.EchoTrainLength, ds.FlipAngle, ds.NumberOfAverages = train, flip, 1
    ds.MagneticFieldStrength, ds.ImagingFrequency, ds.ImagedNucleus = 1.5, 63.87, "1H"
    ds.AcquisitionMatrix = [0, phantoms.matrix_size(phantom, size), phantoms.matrix_size(phantom, size), 0]
    ds.PatientPosition = "HFS"


def exam_datasets(
    exam: SimulatedExam,
    *,
    slices: int | None = None,
    max_slices: int | None = None,
    size: int = 512,
    now: datetime | None = None,
) -> Iterator[Dataset]:
    """Every series of the exam as the modality sends it: the first (``series_datasets``), then the
    protocol's others (phantoms.MORE_SERIES: an MR brain's T1 after its T2), numbered on."""
    yield from series_datasets(exam, slices=slices, max_slices=max_slices, size=size, now=now)
    first = phantoms.BY_PROCEDURE.get(exam.procedure.code)
    for number, phantom in enumerate(phantoms.MORE_SERIES.get(first, ()), 3):
        yield from series_datasets(
            exam, slices=slices, max_slices=max_slices, size=size, now=now, phantom=phantom,
            series_number=number,
        )  # fmt: skip


def series_datasets(
    exam: SimulatedExam,
    *,
    slices: int | None = None,
    max_slices: int | None = None,
    size: int = 512,
    now: datetime | None = None,
    phantom: str | None = None,
    series_number: int = 2,
) -> Iterator[Dataset]:
    """One series for the exam: ``slices`` instances, or the procedure's realistic count capped at
    ``max_slices``. ``now`` is the modality's wall clock: DICOM dates and times are local, without a
    zone, so it must be the facility's local time. ``phantom``: another series of the study than
    the procedure's first (exam_datasets)."""
    procedure = exam.procedure
    count = slices if slices is not None else min(procedure.slices, max_slices or procedure.slices)
    now = now or datetime.now()
    views = ("AP", "LAT")
    phantom = phantom or phantoms.BY_PROCEDURE.get(procedure.code)
    for ds in series_generate(
        modality=procedure.modality,
        count=count,
        study_uid=exam.study_uid,
        size=size,
        phantom=phantom,
        # a handful of patients' anatomies, so the per-slice cache serves most exams
        seed=sum(map(ord, exam.mrn)) % 4,
        lesion=exam.is_stroke,
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
            "SeriesNumber": series_number,
            "InstitutionName": exam.facility_code,
        },
    ):
        thickness = ds.get("SliceThickness")
        axial = f"AXIAL {float(thickness):g}MM" if phantom and thickness else "AXIAL 5MM"
        sequence = phantoms.PHANTOMS[phantom].sequence if phantom else ""
        mr = MR_SEQUENCES[sequence][-1] if sequence else "AX T2"
        ds.SeriesDescription = {"CT": axial, "MR": mr}.get(
            procedure.modality,
            {"LL": "LAT"}.get(view := ds.get("ViewPosition", ""), view) or views[(ds.InstanceNumber - 1) % 2],
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


# --- the hospital's AI node (issue 18): an SR for some CT heads and chest CTs -----------------------

# (finding code, meaning, manufacturer, model) by the procedure it reads; a CTA head is read for LVO
AI_FINDINGS = {
    "70450": ("274100004", "Cerebral hemorrhage", "Aidoc", "BriefCase ICH"),
    "70496": ("20059004", "Occlusion of cerebral artery", "Viz.ai", "LVO"),
    "71260": ("59282003", "Pulmonary embolism", "Aidoc", "BriefCase PE"),
}
AI_RATE, AI_POSITIVE_RATE = 0.6, 0.5  # of those procedures: how many the AI reads, how many positive


def ai_sr_dataset(
    images: list[Dataset], *, code: str, meaning: str, present: bool, probability: float | None,
    manufacturer: str, model: str, version: str,
) -> Dataset:  # fmt: skip
    """A TID 1500 measurement report from an algorithm about ``images`` (one series), made with
    highdicom as the IHE AI Results profile has it: a device observer, one measurement group with
    the finding, its presence, a probability and the flagged (middle) image."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    finding = hd.sr.CodedConcept(code, "SCT", meaning)
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(), manufacturer_name=manufacturer, model_name=model
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    value = hd.sr.CodedConcept(*(("52101004", "SCT", "Present") if present else ("2667000", "SCT", "Absent")))
    probability_name = hd.sr.CodedConcept("C0033204", "UMLS", "Probability")
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="AI finding 1"),
        finding_type=finding,
        algorithm_id=hd.sr.AlgorithmIdentification(name=model, version=version),
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=finding, value=value)],
        measurements=[
            hd.sr.Measurement(
                name=probability_name, value=probability, unit=hd.sr.CodedConcept("1", "UCUM", "no units")
            )
        ]
        if probability is not None
        else None,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(images[len(images) // 2])],
    )
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=hd.sr.CodedConcept("25045-6", "LN", "CT unspecified body region"),
        imaging_measurements=[group],
    )
    return hd.sr.Comprehensive3DSR(
        evidence=images, content=report[0], series_instance_uid=generate_uid(), series_number=900,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=manufacturer, is_complete=True,
    )  # fmt: skip


def ai_sr_for(exam: SimulatedExam, images: list[Dataset], rng: random.Random) -> Dataset | None:
    """The AI node's SR for this exam, when the AI reads its procedure and the draw says so."""
    known = AI_FINDINGS.get(exam.procedure.code)
    if known is None or not images or rng.random() >= AI_RATE:
        return None
    code, meaning, manufacturer, model = known
    present = rng.random() < AI_POSITIVE_RATE
    probability = round(rng.uniform(0.7, 0.98) if present else rng.uniform(0.01, 0.2), 2)
    return ai_sr_dataset(
        images, code=code, meaning=meaning, present=present, probability=probability,
        manufacturer=manufacturer, model=model, version="2.1",
    )  # fmt: skip


def ai_sr_send(sr: Dataset, *, host: str, port: int, calling_ae: str, called_ae: str = "READROOM") -> int:
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(sr.SOPClassUID, "1.2.840.10008.1.2.1")
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        raise ConnectionError(f"association with {called_ae}@{host}:{port} refused")
    try:
        return int(getattr(assoc.send_c_store(sr, msg_id=1), "Status", 0xFFFF))
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
    ai_rng: random.Random | None = None,
) -> tuple[bytes, list[int]]:
    """Order first, then the images — or, for a stroke, images right behind the order; with
    ``ai_rng``, the AI node's SR after the images for some procedures (the last status is its)."""
    now = facility.local_now()
    message = order_message(exam, facility.hl7_sender, control_id, now=now)
    ack = await order_send(message, host=host, port=hl7_port)
    images = list(exam_datasets(exam, slices=slices, max_slices=max_slices, now=now))
    statuses = await asyncio.to_thread(
        series_send, iter(images), host=host, port=dicom_port, calling_ae=facility.calling_ae
    )
    # the hospital's AI node reads some CT heads and chest CTs once their images are in
    sr = ai_sr_for(exam, images, ai_rng) if ai_rng is not None else None
    if sr is not None:
        statuses.append(
            await asyncio.to_thread(
                ai_sr_send, sr, host=host, port=dicom_port, calling_ae=facility.calling_ae
            )
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
                ai_rng=rng,
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
