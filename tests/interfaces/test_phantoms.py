"""The facility simulator's procedural phantoms (issue 19): images that match the procedure, with real
HU and geometry, decoded by pydicom and sent through the real Storage SCP."""

from __future__ import annotations

import dataclasses
import io
import random
from io import BytesIO

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread, dcmwrite
from pydicom.pixels import apply_modality_lut

from imaging.models import Study
from interfaces import phantoms
from interfaces.simulator import (
    PROCEDURES,
    STROKE_PROCEDURE,
    exam_datasets,
    exam_random,
    series_datasets,
    series_send,
)

BY_CODE = {p.code: p for p in PROCEDURES}


def exam_for(code: str, *, stroke: bool = False, seed: int = 7):
    exam = exam_random(random.Random(seed), "CHI-L1", stroke_rate=0.0, trauma_rate=0.0)
    reason = "CODE STROKE - LEFT FACIAL DROOP, LKW 45 MIN" if stroke else "HEADACHE"
    return dataclasses.replace(exam, procedure=BY_CODE[code], reason=reason)


def decoded(ds):
    """What a receiver reads: the Part 10 bytes written and parsed again."""
    part10 = io.BytesIO()
    dcmwrite(part10, ds, enforce_file_format=True)
    return dcmread(io.BytesIO(part10.getvalue()))


def hounsfield(ds) -> np.ndarray:
    return apply_modality_lut(ds.pixel_array, ds)


def at_mm(ds, x_mm: float, y_mm: float) -> tuple[int, int]:
    """(row, column) of the pixel at patient (x, y) in mm, from the header's own geometry."""
    x0, y0 = float(ds.ImagePositionPatient[0]), float(ds.ImagePositionPatient[1])
    row_spacing, column_spacing = map(float, ds.PixelSpacing)
    return round((y_mm - y0) / row_spacing), round((x_mm - x0) / column_spacing)


def test_a_ct_head_slice_has_brain_inside_bone_at_the_rim_and_real_geometry():
    # given a routine CT head of 12 slices from the simulator
    slices = [decoded(ds) for ds in series_datasets(exam_for("70450"), slices=12)]
    middle = slices[6]
    # then each slice decodes as 512² signed 16-bit with HU through the rescale
    assert (middle.Rows, middle.Columns, middle.pixel_array.dtype) == (512, 512, np.int16)
    assert (float(middle.RescaleSlope), float(middle.RescaleIntercept)) == (1.0, -1024.0)
    hu = hounsfield(middle)
    for ds in slices:
        values = hounsfield(ds)
        assert values.min() >= -1024 and values.max() <= 3071
    # brain-range HU in the hemisphere beside the midline, bone at the rim, air outside
    row, column = at_mm(middle, 30.0, 0.0)
    assert 20 < np.median(hu[row - 5 : row + 5, column - 5 : column + 5]) < 50
    centre_row = at_mm(middle, 0.0, 0.0)[0]
    profile = hu[centre_row]
    assert profile[:20].max() < -900  # air at the image edge
    rim = np.flatnonzero(profile > 700)
    assert rim.size and rim.min() < 256 - 100 and rim.max() > 256 + 100  # skull on both sides
    # the geometry a viewer's MPR needs: spacing, orientation, positions stepping along z
    assert [float(v) for v in middle.PixelSpacing] == pytest.approx([0.449, 0.449], abs=0.01)
    assert [float(v) for v in middle.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in slices])
    assert (positions[:, :2] == positions[0, :2]).all()
    assert np.diff(positions[:, 2]) == pytest.approx([float(middle.SliceThickness)] * 11, abs=0.01)
    assert (float(middle.WindowCenter), float(middle.WindowWidth)) == (40.0, 80.0)
    # and scrolling shows a volume: the skull narrows towards the vertex
    assert np.count_nonzero(hounsfield(slices[-1]) > -500) < np.count_nonzero(hu > -500)


def test_a_code_stroke_head_shows_a_hyperdensity_a_routine_one_does_not():
    def hyperdense(stroke: bool) -> int:
        datasets = series_datasets(exam_for("70450", stroke=stroke), slices=12)
        return sum(int(np.count_nonzero((h > 60) & (h < 90))) for h in map(hounsfield, datasets))

    assert hyperdense(stroke=True) > 500 > hyperdense(stroke=False)


def test_phantoms_are_deterministic_per_seed_and_slices_differ():
    first = phantoms.slice_pixels("head", 5, 12, size=128, seed=1)
    assert np.array_equal(first, phantoms.slice_pixels("head", 5, 12, size=128, seed=1))
    assert not np.array_equal(first, phantoms.slice_pixels("head", 6, 12, size=128, seed=1))
    assert not np.array_equal(first, phantoms.slice_pixels("head", 5, 12, size=128, seed=2))
    assert not first.flags.writeable  # cached: nobody may change what the next exam gets


@pytest.mark.parametrize(
    ("code", "phantom", "expected"),
    [("71260", "chest", (-850, 40, 700)), ("74177", "abdomen", (-100, 60, 700))],
)
def test_a_chest_and_an_abdomen_ct_have_their_tissues(code, phantom, expected):
    datasets = [decoded(ds) for ds in series_datasets(exam_for(code), slices=12)]
    values = np.concatenate([hounsfield(ds).ravel() for ds in datasets])
    # lungs (or fat), soft tissue and bone are each a real part of the volume
    for hu in expected:
        assert np.count_nonzero(np.abs(values - hu) < 40 if hu < 500 else values > hu) > 10_000, hu
    field_of_view = phantoms.PHANTOMS[phantom].field_of_view_mm
    assert float(datasets[0].PixelSpacing[0]) == pytest.approx(field_of_view / 512)


@pytest.mark.parametrize(("code", "views"), [("71045", ["PA"]), ("73560", ["AP", "LL"])])
def test_radiographs_are_monochrome2_projections_without_slice_geometry(code, views):
    datasets = [decoded(ds) for ds in series_datasets(exam_for(code))]
    assert [ds.ViewPosition for ds in datasets] == views
    for ds in datasets:
        assert (ds.Modality, ds.PhotometricInterpretation, ds.PixelRepresentation) == ("CR", "MONOCHROME2", 0)
        pixels = ds.pixel_array
        assert pixels.shape == (512, 512) and pixels.max() <= 4095
        # bone is white, air is dark, and there is much in between: a projection, not a mask
        assert np.percentile(pixels, 99) > 2500 and np.percentile(pixels, 1) < 800
        assert len(np.unique(pixels)) > 500
        assert "ImagePositionPatient" not in ds and ds.ImagerPixelSpacing[0] > 0
    if len(datasets) == 2:
        assert not np.array_equal(datasets[0].pixel_array, datasets[1].pixel_array)


def test_a_simulated_head_ct_is_stored_by_the_scp_and_renders(dicom_scp, client, admin_chicago):
    # given a code-stroke CT head from the simulator, sent over the simulator's own association
    host, port, aet = dicom_scp
    exam = exam_for(STROKE_PROCEDURE.code, stroke=True)
    statuses = series_send(
        series_datasets(exam, slices=4), host=host, port=port, calling_ae="LAKESHORE_CT1", called_ae=aet
    )
    # then every instance is stored and the study renders as a PNG in a brain window
    assert statuses == [0, 0, 0, 0]
    study = Study.objects.get(study_instance_uid=exam.study_uid)
    assert study.number_of_instances == 4
    client.force_login(admin_chicago)
    answer = client.get(f"/dicomweb/studies/{exam.study_uid}/thumbnail?viewport=128,128&window=40,80")
    assert answer.status_code == 200, answer.content[:200]
    rendered = np.asarray(Image.open(BytesIO(answer.content)).convert("L"))
    assert rendered.shape == (128, 128) and rendered.min() < 10 and rendered.max() > 245
    assert client.get(f"/dicomweb/studies/{exam.study_uid}/rendered").status_code == 200


# --- MR brain: the head model with T1/T2 contrast ------------------------------------------------


def mr_brain_exam():
    return exam_for("70551")


def test_an_mr_brain_is_an_axial_t2_then_t1_series_with_mr_geometry():
    # given the simulator's MR brain of 12 slices a series, as the demo sends it
    datasets = [decoded(ds) for ds in exam_datasets(mr_brain_exam(), slices=12)]
    # then it is two series of MR Image Storage, T2 first, one study
    assert len(datasets) == 24
    assert {ds.SOPClassUID for ds in datasets} == {"1.2.840.10008.5.1.4.1.1.4"}
    assert {ds.Modality for ds in datasets} == {"MR"}
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    t2, t1 = datasets[:12], datasets[12:]
    assert len({ds.SeriesInstanceUID for ds in t2}) == len({ds.SeriesInstanceUID for ds in t1}) == 1
    assert t2[0].SeriesInstanceUID != t1[0].SeriesInstanceUID
    assert (t2[0].SeriesNumber, t2[0].SeriesDescription, t1[0].SeriesNumber, t1[0].SeriesDescription) == (
        2, "AX T2 FSE", 3, "AX T1 SE",
    )  # fmt: skip
    assert float(t2[0].RepetitionTime) > 2000 > 800 > float(t1[0].RepetitionTime)
    assert float(t2[0].EchoTime) > 80 > 20 > float(t1[0].EchoTime)
    for ds in datasets:
        # 12-bit unsigned magnitude at an MR matrix, no Modality LUT (MR has no units)
        assert (ds.Rows, ds.Columns, ds.pixel_array.dtype) == (256, 256, np.uint16)
        assert (ds.PixelRepresentation, ds.BitsStored, ds.HighBit) == (0, 12, 11)
        assert ds.pixel_array.max() <= 4095 and "RescaleIntercept" not in ds
        assert (ds.MRAcquisitionType, float(ds.MagneticFieldStrength)) == ("2D", 1.5)
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([220 / 256] * 2)
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    for series in (t2, t1):
        positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in series])
        # the first pixel's centre half a pixel in from the field's corner, the image centred
        assert positions[0, 0] == pytest.approx(-110 + 220 / 512, abs=1e-4)
        assert (positions[:, :2] == positions[0, :2]).all()
        spacing = float(series[0].SpacingBetweenSlices)
        assert np.diff(positions[:, 2]) == pytest.approx([spacing] * 11, abs=0.01)
        assert [float(ds.SliceLocation) for ds in series] == pytest.approx(positions[:, 2].tolist())
        # 2-D spin echo leaves a gap: thinner slices than their spacing, over the head's 150 mm
        assert 0.7 * spacing < float(series[0].SliceThickness) < spacing
        assert spacing * 12 == pytest.approx(150, abs=1)
    # the two series are the same slices of the same patient: a reader compares them level by level
    assert [ds.ImagePositionPatient for ds in t2] == [ds.ImagePositionPatient for ds in t1]


def model_signal(name: str, model_x: float, model_y: float, *, seed: int = 1) -> float:
    """The middle slice's median signal around a point of the head model (before the patient's own
    size and position), found through the phantom's own spacing."""
    phantom = phantoms.PHANTOMS[name]
    pixels = phantoms.slice_pixels(name, 6, 12, size=512, seed=seed)
    scale, dx, dy = phantoms._jitter(seed)
    spacing = phantoms.pixel_spacing(phantom, 512)
    column = int((dx + scale * model_x + phantom.field_of_view_mm / 2) / spacing)
    row = int((dy + scale * model_y + phantom.field_of_view_mm / 2) / spacing)
    return float(np.median(pixels[row - 2 : row + 3, column - 2 : column + 3]))


def test_mr_contrast_is_t1_and_t2_like():
    # points of the middle slice: a lateral ventricle, deep white matter, cortical grey matter
    csf, white, grey = (9.0, -4.0), (30.0, 30.0), (59.0, 0.0)
    t2 = {
        tissue: model_signal("mr_brain_t2", *at)
        for tissue, at in (("csf", csf), ("white", white), ("grey", grey))
    }
    t1 = {
        tissue: model_signal("mr_brain_t1", *at)
        for tissue, at in (("csf", csf), ("white", white), ("grey", grey))
    }
    # T2: fluid brightest, grey brighter than white; T1: white brighter than grey, fluid dark
    assert t2["csf"] > 2 * t2["grey"] and t2["grey"] > 1.2 * t2["white"]
    assert t1["white"] > 1.2 * t1["grey"] and t1["grey"] > 2 * t1["csf"]
    # air is a Rician noise floor, not zeros: a magnitude image
    corner = phantoms.slice_pixels("mr_brain_t2", 6, 12, size=512, seed=1)[:20, :20]
    assert 0 < corner.mean() < 60 and np.count_nonzero(corner) > 300


def test_the_mr_head_is_the_ct_heads_model_at_the_same_place():
    # given the same patient (seed) and level on CT and on T2, each at its own field of view and matrix
    def csf_centre(name: str, is_csf) -> tuple[float, float]:
        phantom = phantoms.PHANTOMS[name]
        pixels = phantoms.slice_pixels(name, 6, 12, size=512, seed=2).astype(np.float64)
        if phantom.kind == "CT":
            pixels = pixels - phantoms.HU_OFFSET
        spacing = phantoms.pixel_spacing(phantom, 512)
        rows, columns = np.nonzero(is_csf(pixels))
        # the centroid in patient mm (pixel centres from the image centre)
        half = phantom.field_of_view_mm / 2
        return (columns.mean() + 0.5) * spacing - half, (rows.mean() + 0.5) * spacing - half

    ct = csf_centre("head", lambda hu: (hu > -10) & (hu < 15))
    mr = csf_centre("mr_brain_t2", lambda signal: signal > 2000)
    # then the ventricles sit at the same patient position, to within a pixel
    assert ct == pytest.approx(mr, abs=0.9)


def test_only_the_mr_brain_has_a_second_series():
    for code in ("70450", "71045", "73721"):
        datasets = list(exam_datasets(exam_for(code), slices=2, size=64))
        assert len({ds.SeriesInstanceUID for ds in datasets}) == 1, code
    # the MR knee still carries the bundled MR test image: no knee MR model yet (docs/operations.md)
    (knee, *_) = exam_datasets(exam_for("73721"), slices=1, size=64)
    assert knee.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4" and knee.SeriesDescription == "AX T2"


def test_a_simulated_mr_brain_is_stored_by_the_scp_as_two_series_and_renders(
    dicom_scp, client, admin_chicago
):
    # given the simulator's MR brain (T2 then T1), sent over one association as exam_simulate does
    host, port, aet = dicom_scp
    exam = mr_brain_exam()
    statuses = series_send(
        exam_datasets(exam, slices=3), host=host, port=port, calling_ae="LAKESHORE_CT1", called_ae=aet
    )
    # then all six instances are stored, as one study of two MR series, and it renders in its window
    assert statuses == [0] * 6
    study = Study.objects.get(study_instance_uid=exam.study_uid)
    assert (study.number_of_instances, study.number_of_series) == (6, 2)
    assert set(study.series.values_list("modality", flat=True)) == {"MR"}
    client.force_login(admin_chicago)
    answer = client.get(f"/dicomweb/studies/{exam.study_uid}/thumbnail?viewport=128,128")
    assert answer.status_code == 200, answer.content[:200]
    rendered = np.asarray(Image.open(BytesIO(answer.content)).convert("L"))
    assert rendered.min() < 10 and rendered.max() > 200  # dark air, bright fluid on T2
