"""Procedural phantoms for the facility simulator: images that look like the procedure ordered.

numpy only. A CT phantom is built in patient millimetres (DICOM LPS: image columns run to the
patient's left, rows to the back), so one description serves every matrix size and each slice's z
gives its own anatomy — scrolling a head shows the skull closing towards the vertex and the
ventricles appearing and going. CT values are Hounsfield units stored as ``HU + 1024`` (int16,
RescaleIntercept −1024, as CT_small and most scanners do). Radiographs (chest, knee) are drawn as
2-D projections in 12-bit MONOCHROME2 (bone bright). MR brain (T1- and T2-weighted) is the CT
head's own geometry with each tissue given its spin-echo signal instead of its HU (``HEAD_TISSUES``),
12-bit unsigned magnitude with Rician background noise, at an MR matrix (256²), slices with a gap.
Everything is deterministic per ``seed`` and cached per (phantom, slice): the simulator sends the
same anatomy many times.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

HU_OFFSET = 1024  # stored = HU + 1024; RescaleIntercept −1024, RescaleSlope 1
HU_MIN, HU_MAX = -1024, 3071  # what a 12-bit CT stores


@dataclass(frozen=True)
class Phantom:
    name: str
    kind: str  # "CT" (axial slices in HU), "MR" (axial slices, signal) or "XR" (a projection)
    field_of_view_mm: float  # the reconstructed (or detector) width
    coverage_mm: float  # CT/MR: the z extent the series covers, split into its slices
    window: tuple[float, float]  # (centre, width) the modality suggests
    matrix: int = 0  # MR: the acquisition matrix, the most a series has (0: as asked)
    slice_gap: float = 0.0  # MR: the gap between slices, as a share of the slice spacing
    sequence: str = ""  # MR: "t1" or "t2", the contrast (HEAD_TISSUES) and the header's timings


PHANTOMS = {
    "head": Phantom("head", "CT", 230.0, 150.0, (40.0, 80.0)),
    "cta_head": Phantom("cta_head", "CT", 230.0, 150.0, (150.0, 600.0)),
    "chest": Phantom("chest", "CT", 360.0, 280.0, (-600.0, 1500.0)),
    "abdomen": Phantom("abdomen", "CT", 380.0, 400.0, (50.0, 400.0)),
    "cxr": Phantom("cxr", "XR", 430.0, 0.0, (2048.0, 4096.0)),
    "knee": Phantom("knee", "XR", 240.0, 0.0, (2048.0, 4096.0)),
    # 220 mm at 256² (0.86 mm pixels), slices 20 % gap: an axial spin-echo brain as a 1.5 T does it
    "mr_brain_t2": Phantom("mr_brain_t2", "MR", 220.0, 150.0, (1300.0, 2600.0), 256, 0.2, "t2"),
    "mr_brain_t1": Phantom("mr_brain_t1", "MR", 220.0, 150.0, (700.0, 1400.0), 256, 0.2, "t1"),
}

# procedure code (CPT, as the simulator orders it) → the phantom of its first series; MR knee keeps
# the bundled MR test image (no knee MR model yet)
BY_PROCEDURE = {
    "70551": "mr_brain_t2",
    "70450": "head",
    "70496": "cta_head",
    "71260": "chest",
    "74177": "abdomen",
    "71045": "cxr",
    "73560": "knee",
}
# the series a study of the procedure has after the first, as a protocol adds them
MORE_SERIES = {"mr_brain_t2": ("mr_brain_t1",)}


def matrix_size(phantom: Phantom, size: int) -> int:
    """The rows and columns of the phantom's images when ``size`` is asked: an MR is acquired at its
    own matrix (256²), so a 512² request gets 256²; a smaller request (a fast test) is honoured."""
    return min(size, phantom.matrix) if phantom.matrix else size


def pixel_spacing(phantom: Phantom, size: int) -> float:
    return round(phantom.field_of_view_mm / matrix_size(phantom, size), 6)  # a DS holds 16 characters


def slice_spacing(phantom: Phantom, count: int) -> float:
    """Centre to centre: ``count`` slices over the phantom's coverage (fewer slices, not a shorter head)."""
    return round(phantom.coverage_mm / max(1, count), 1)


def slice_thickness(phantom: Phantom, count: int) -> float:
    """CT: contiguous slices. MR: thinner than their spacing by the gap (2-D spin echo leaves one
    against cross-talk)."""
    return round(slice_spacing(phantom, count) * (1.0 - phantom.slice_gap), 1)


def slice_pixels(
    name: str, index: int, count: int, *, size: int = 512, seed: int = 0, lesion: bool = False
) -> np.ndarray:
    """Stored pixel values of slice ``index`` (0-based, inferior first) of ``count``; read-only.
    CT: int16 HU + 1024. MR: uint16 0…4095 at ``matrix_size``. XR: uint16 0…4095, ``index`` picks
    the view (0 AP, 1 lateral)."""
    return _cached(name, index, count, size, seed, lesion)


@lru_cache(maxsize=96)  # 96 × 512 KiB at 512²: a few studies' worth, not the process's memory
def _cached(name: str, index: int, count: int, size: int, seed: int, lesion: bool) -> np.ndarray:
    phantom = PHANTOMS[name]
    rng = np.random.default_rng([seed, index, count, size, int(lesion)])
    if phantom.kind == "CT":
        x, y = _grid(size, phantom.field_of_view_mm)
        # the slice centre's height in the covered range, 0 at the bottom, 1 at the top
        t = (index + 0.5) / max(1, count)
        hu = _CT[name](x, y, t, _jitter(seed), lesion)
        hu = hu + rng.normal(0.0, 4.0, hu.shape) * (hu > -900)  # quantum noise in tissue, not air
        stored = (np.clip(np.round(hu), HU_MIN, HU_MAX) + HU_OFFSET).astype(np.int16)
    elif phantom.kind == "MR":
        matrix = matrix_size(phantom, size)
        x, y = _grid(matrix, phantom.field_of_view_mm)
        t = (index + 0.5) / max(1, count)
        signal = _head(x, y, t, _jitter(seed), lesion, tissues=phantom.sequence)
        signal = _blur(signal, 1)  # partial volume: a 0.9 mm pixel straddles tissue boundaries
        # a magnitude image: complex Gaussian noise, so air is a low Rician floor, never exactly 0
        sigma = 18.0
        real = signal + rng.normal(0.0, sigma, signal.shape)
        imaginary = rng.normal(0.0, sigma, signal.shape)
        stored = np.clip(np.round(np.hypot(real, imaginary)), 0, 4095).astype(np.uint16)
    else:
        x, y = _grid(size, phantom.field_of_view_mm)
        density = _XR[name](x, y, index, _jitter(seed))
        density = _blur(density, max(1, size // 256))
        stored = np.clip(np.round(density * 3400 + 300 + rng.normal(0.0, 25.0, density.shape)), 0, 4095)
        stored = stored.astype(np.uint16)
    stored.setflags(write=False)
    return stored


@lru_cache(maxsize=8)
def _grid(size: int, fov: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in mm from the image centre: x to the patient's left, y to the back."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) * (fov / size) - fov / 2
    x, y = np.meshgrid(axis, axis)
    return x, y


def _jitter(seed: int) -> tuple[float, float, float]:
    """A patient's own size and position: ±5 % and a few mm, the same for every slice of a seed."""
    draw = np.random.default_rng(seed).uniform(-1.0, 1.0, 3)
    return 1.0 + 0.05 * float(draw[0]), 3.0 * float(draw[1]), 3.0 * float(draw[2])


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    if a <= 0 or b <= 0:
        return np.zeros(x.shape, dtype=bool)
    return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0


def _bump(t: float, centre: float, half_width: float) -> float:
    """0…1, largest at ``centre``: how much of a structure a slice at ``t`` cuts."""
    u = (t - centre) / half_width
    return float(np.sqrt(max(0.0, 1.0 - u * u)))


# --- CT: Hounsfield maps ----------------------------------------------------------------------------


# What each tissue of the head model is, per contrast: HU for CT; for MR the signal a spin-echo
# sequence gives at 1.5 T (arbitrary units, 12-bit): on T1 fat and marrow bright, white matter
# brighter than grey, CSF dark; on T2 CSF brightest, grey brighter than white. Cortical bone and air
# give no signal on either. The same geometry for all, so a CT and an MR of one patient line up.
HEAD_TISSUES: dict[str, dict[str, float]] = {
    #            air     scalp  bone    diploë grey  white falx csf   petrous vessel occluded clot bleed
    "ct": dict(air=-1000, scalp=30, bone=1000, diploe=700, grey=40, white=30, falx=50, csf=5,
               petrous=1200, vessel=320, occluded=40, clot=75, bleed=70),
    "t1": dict(air=0, scalp=1400, bone=40, diploe=1250, grey=560, white=820, falx=300, csf=180,
               petrous=40, vessel=60, occluded=560, clot=600, bleed=620),
    "t2": dict(air=0, scalp=900, bone=30, diploe=700, grey=980, white=640, falx=250, csf=2600,
               petrous=30, vessel=60, occluded=980, clot=90, bleed=300),
}  # fmt: skip


def _head(x, y, t: float, jitter, lesion: bool, *, contrast: bool = False, tissues: str = "ct") -> np.ndarray:
    v = HEAD_TISSUES[tissues]
    scale, dx, dy = jitter
    x, y = (x - dx) / scale, (y - dy) / scale
    hu = np.full(x.shape, v["air"], dtype=np.float32)
    s = _bump(t, 0.42, 0.72)  # the skull is widest a little below the middle and closes at the vertex
    a, b = 74.0 * s, 92.0 * s
    hu[_ellipse(x, y, 0, 0, a, b)] = v["scalp"]
    hu[_ellipse(x, y, 0, 0, a - 4, b - 4)] = v["bone"]  # cortical bone
    hu[_ellipse(x, y, 0, 0, a - 6, b - 6)] = v["diploe"]
    hu[_ellipse(x, y, 0, 0, a - 8, b - 8)] = v["bone"]
    brain = _ellipse(x, y, 0, 0, a - 10, b - 10)
    hu[brain] = v["grey"]
    hu[_ellipse(x, y, 0, 0, a - 18, b - 18) & brain] = v["white"]
    hu[brain & (np.abs(x) < 1.0) & (y < 0.55 * (b - 10))] = v["falx"]  # a little denser than brain
    # the lateral ventricles: two curved slits either side of the midline, through the middle slices
    ventricle = _bump(t, 0.55, 0.16)
    for side in (-1, 1):
        hu[_ellipse(x, y, side * 9.0, -4.0, 6.0 * ventricle, 26.0 * ventricle)] = v["csf"]
    third = _bump(t, 0.4, 0.08)
    hu[_ellipse(x, y, 0, 8.0, 2.5 * third, 9.0 * third)] = v["csf"]
    if t < 0.2:  # the skull base: petrous bone and the sinuses' air
        base = 1.0 - t / 0.2
        for side in (-1, 1):
            hu[_ellipse(x, y, side * 38.0, 10.0, 18.0 * base, 7.0 * base)] = v["petrous"]
        hu[_ellipse(x, y, 0, -55.0, 14.0 * base, 10.0 * base)] = v["air"]
    if contrast:  # a CTA: the circle of Willis and the middle cerebral arteries, opacified
        w = _bump(t, 0.3, 0.08)
        ring = _ellipse(x, y, 0, 2.0, 17.0 * w, 15.0 * w) & ~_ellipse(x, y, 0, 2.0, 14.5 * w, 12.5 * w)
        hu[ring] = v["vessel"]
        for side in (-1, 1):
            hu[_ellipse(x, y, side * 32.0, -2.0, 16.0 * w, 1.8 * w)] = v["vessel"]
        if lesion:  # a right M1 occlusion: the artery stops short
            hu[_ellipse(x, y, -36.0, -2.0, 13.0 * w, 2.5 * w)] = v["occluded"]
    elif lesion:
        # the hyperdense right MCA (a clot) low, and a right basal-ganglia bleed higher up
        # (on MR: the clot dark on T2, the acute bleed dark on T2 and a little bright on T1)
        hu[_ellipse(x, y, -30.0, -2.0, 14.0 * _bump(t, 0.3, 0.07), 2.2 * _bump(t, 0.3, 0.07))] = v["clot"]
        hu[_ellipse(x, y, -22.0, 4.0, 11.0 * _bump(t, 0.48, 0.1), 8.0 * _bump(t, 0.48, 0.1))] = v["bleed"]
    return hu


def _cta_head(x, y, t: float, jitter, lesion: bool) -> np.ndarray:
    return _head(x, y, t, jitter, lesion, contrast=True)


def _trunk(x, y, jitter, a: float, b: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The body outline with subcutaneous fat and muscle, and the vertebra; returns (HU, x, y)."""
    scale, dx, dy = jitter
    x, y = (x - dx) / scale, (y - dy) / scale
    hu = np.full(x.shape, -1000.0, dtype=np.float32)
    hu[_ellipse(x, y, 0, 0, a, b)] = -100.0  # fat
    hu[_ellipse(x, y, 0, 0, a - 12, b - 12)] = 45.0  # muscle and organs
    hu[y > b - 4] = np.where(_ellipse(x, y, 0, 0, a, b)[y > b - 4], -100.0, -1000.0)  # fat at the back
    hu[_ellipse(x, y, 0, b - 58, 20, 17)] = 1000.0  # vertebral body: cortex
    hu[_ellipse(x, y, 0, b - 58, 17, 14)] = 250.0  # cancellous bone
    hu[_ellipse(x, y, 0, b - 33, 7, 6)] = 15.0  # the canal's cord and CSF
    canal_ring = _ellipse(x, y, 0, b - 33, 11, 10) & ~_ellipse(x, y, 0, b - 33, 7, 6)
    hu[canal_ring] = 900.0  # the posterior arch
    hu[_ellipse(x, y, 0, b - 20, 4, 10)] = 800.0  # spinous process
    return hu, x, y


def _chest(x, y, t: float, jitter, lesion: bool) -> np.ndarray:
    hu, x, y = _trunk(x, y, jitter, 165.0, 112.0)
    lung = _bump(t, 0.55, 0.6)  # small apices, large bases, then the diaphragm at the bottom
    dome = 1.0 if t > 0.18 else t / 0.18
    for side in (-1, 1):
        hu[_ellipse(x, y, side * 72.0, 2.0, 62.0 * lung * dome, 88.0 * lung * dome)] = -850.0
        # vessels in the lung: a few dots, larger near the hila
        for k, (px, py) in enumerate(((40, -20), (60, 10), (85, -35), (95, 30), (55, 50), (75, -60))):
            r = (4.0 if k < 2 else 2.0) * lung
            hu[_ellipse(x, y, side * px, py, r, r) & (hu == -850.0)] = 30.0
    heart = _bump(t, 0.3, 0.3)
    hu[_ellipse(x, y, 22.0, -20.0, 55.0 * heart, 45.0 * heart)] = 40.0  # heart, towards the left
    hu[_ellipse(x, y, 0, 20.0, 15.0, 15.0) & (t > 0.45)] = 200.0  # descending... the aorta, opacified
    hu[_ellipse(x, y, 10.0, 40.0, 13.0, 13.0)] = 200.0  # descending aorta beside the spine
    hu[_ellipse(x, y, 0, -95.0, 14.0, 6.0)] = 800.0  # sternum
    # ribs: short bone arcs cut obliquely around the chest wall
    angles = np.linspace(0.35, np.pi - 0.35, 7)
    phase = 0.12 * np.sin(t * 25.0)
    for angle in np.concatenate([angles + phase, -angles - phase]):
        cx, cy = 150.0 * np.cos(angle), 100.0 * np.sin(angle)
        hu[_ellipse(x, y, cx, cy, 7.0, 5.0)] = 900.0
    if lesion:  # a right lower-lobe pulmonary embolus: a filling defect in an opacified artery
        hu[_ellipse(x, y, -45.0, -5.0, 6.0, 6.0) & (t > 0.35) & (t < 0.5)] = 35.0
    return hu


def _abdomen(x, y, t: float, jitter, lesion: bool) -> np.ndarray:
    hu, x, y = _trunk(x, y, jitter, 170.0, 120.0)
    liver = _bump(t, 0.8, 0.35)
    hu[_ellipse(x, y, -65.0, -10.0, 80.0 * liver, 75.0 * liver)] = 60.0  # liver on the patient's right
    spleen = _bump(t, 0.75, 0.15)
    hu[_ellipse(x, y, 95.0, 20.0, 25.0 * spleen, 40.0 * spleen)] = 50.0
    kidney = _bump(t, 0.6, 0.15)
    for side in (-1, 1):
        hu[_ellipse(x, y, side * 55.0, 45.0, 22.0 * kidney, 30.0 * kidney)] = 160.0  # enhancing cortex
    hu[_ellipse(x, y, 12.0, 30.0, 11.0, 11.0)] = 180.0  # aorta
    hu[_ellipse(x, y, -18.0, 28.0, 12.0, 10.0)] = 120.0  # IVC
    bowel = _bump(t, 0.35, 0.4)
    for cx, cy in ((-20, -60), (30, -50), (60, -10), (-50, 20), (10, -20)):
        hu[_ellipse(x, y, cx, cy, 18.0 * bowel, 14.0 * bowel)] = -600.0  # gas in bowel loops
    if t < 0.25:  # the pelvis: the iliac wings
        pelvis = 1.0 - t / 0.25
        for side in (-1, 1):
            hu[_ellipse(x, y, side * 95.0, 40.0, 35.0 * pelvis, 12.0 * pelvis)] = 700.0
    return hu


_CT = {"head": _head, "cta_head": _cta_head, "chest": _chest, "abdomen": _abdomen}


# --- radiographs: attenuation maps, 0 (air, black) … 1 (bone, white) --------------------------------


def _cxr(x, y, view: int, jitter) -> np.ndarray:
    scale, dx, dy = jitter
    x, y = (x - dx) / scale, (y - dy) / scale  # here y runs down the patient (head at the top)
    d = np.zeros(x.shape, dtype=np.float32)
    body = _ellipse(x, y, 0, 20, 175, 260)
    d[body] = 0.35
    for side in (-1, 1):
        lung = _ellipse(x, y, side * 75.0, -10.0, 62.0, 140.0) & (y > -150 + np.abs(x - side * 75) * 0.4)
        d[lung] = 0.12  # aerated lung: dark
    d[_ellipse(x, y, 25.0, 60.0, 70.0, 60.0)] = 0.45  # the heart, to the patient's left (image right)
    d[(np.abs(x) < 22) & (y < 40)] = np.maximum(d[(np.abs(x) < 22) & (y < 40)], 0.42)  # mediastinum
    d[np.abs(x) < 13] += 0.25  # the spine through the mediastinum
    for k in range(9):  # posterior ribs: arcs sloping down from the spine
        for side in (-1, 1):
            arc_y = -120.0 + k * 24.0 + 0.004 * (np.abs(x) - 20.0) ** 2 * 1.1
            rib = (np.abs(y - arc_y) < 4.5) & (np.abs(x) > 15) & (np.abs(x) < 140) & (np.sign(x) == side)
            d[rib & body] += 0.18
    for side in (-1, 1):  # clavicles
        clav = (np.abs(y - (-135.0 + 0.15 * np.abs(x))) < 6.0) & (np.abs(x) > 20) & (np.abs(x) < 120)
        d[clav & (np.sign(x) == side)] += 0.3
    d[y > 125 + 0.0015 * x**2] = np.maximum(d[y > 125 + 0.0015 * x**2], 0.42)  # diaphragm and abdomen
    return np.clip(d, 0.0, 1.0)


def _knee(x, y, view: int, jitter) -> np.ndarray:
    scale, dx, dy = jitter
    x, y = (x - dx) / scale, (y - dy) / scale  # y down the leg: femur above, tibia below
    d = np.zeros(x.shape, dtype=np.float32)
    d[np.abs(x) < 55 + 0.05 * np.abs(y)] = 0.25  # soft tissue of the leg
    gap = 3.5  # half the joint space (cartilage is not seen on a radiograph)
    # femur: a shaft flaring into the condyles
    width = np.where(y < -60, 16.0, 16.0 + (y + 60) * 0.5)
    femur = (y < -gap) & (np.abs(x) < np.minimum(width, 42.0))
    femur |= _ellipse(x, y, -20, -gap - 18, 22, 18) | _ellipse(x, y, 20, -gap - 18, 22, 18)
    femur &= y < -gap
    # tibia: a plateau tapering into the shaft
    tib_width = np.where(y > 60, 14.0, 40.0 - (y - gap) * 0.45)
    tibia = (y > gap) & (np.abs(x) < np.maximum(tib_width, 14.0))
    for bone in (femur, tibia):
        d[bone] = 0.75
        inner = bone & ~_edge(bone)
        d[inner] = 0.58  # the medullary cavity reads darker than the cortex
    if view == 0:  # AP: the fibular head lateral, the patella superimposed on the femur
        d[(np.abs(x - 45) < 6) & (y > 18) & (y < 140)] = 0.7
        d[_ellipse(x, y, 45, 20, 9, 8)] = 0.72
        d[_ellipse(x, y, 0, -25, 18, 22) & femur] = 0.85
    else:  # lateral: the patella in front of the femur
        d[_ellipse(x, y, -48, -30, 10, 20)] = 0.8
    return np.clip(d, 0.0, 1.0)


def _edge(mask: np.ndarray, width: int = 3) -> np.ndarray:
    """The rim of a mask: where a pixel ``width`` away is outside it."""
    edge = np.zeros_like(mask)
    for shift, axis in ((width, 0), (-width, 0), (width, 1), (-width, 1)):
        edge |= mask & ~np.roll(mask, shift, axis=axis)
    return edge


_XR = {"cxr": _cxr, "knee": _knee}


def _blur(image: np.ndarray, radius: int) -> np.ndarray:
    """A separable box blur (twice: close to a Gaussian), so a radiograph's edges are not drawn lines."""
    for _ in range(2):
        for axis in (0, 1):
            padded = np.pad(
                image, [(radius + 1, radius) if a == axis else (0, 0) for a in (0, 1)], mode="edge"
            )
            cumulative = np.cumsum(padded, axis=axis, dtype=np.float64)
            window = 2 * radius + 1
            upper = np.take(cumulative, np.arange(window, cumulative.shape[axis]), axis=axis)
            lower = np.take(cumulative, np.arange(0, cumulative.shape[axis] - window), axis=axis)
            image = ((upper - lower) / window).astype(np.float32)
    return image
