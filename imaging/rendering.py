"""Frames rendered on the server for the viewer and for WADO-RS ``…/rendered`` (DESIGN.md §4 step 5).

The pipeline of PS3.3 C.11 (grayscale): stored values → **Modality LUT** (Rescale Slope/Intercept,
C.11.1; for CT the result is Hounsfield units) → **VOI LUT** (window centre/width, C.11.2.1.2) →
8-bit output, inverted for MONOCHROME1 (C.7.6.3.1.2: minimum value is white). Colour images
(RGB, YBR converted by pydicom, palette colour) are shown as they are.

The numeric steps are pure functions over numpy arrays. ``frame_render`` adds decryption and a
short-lived cache in the process's memory (the "frames" cache): rendered PHI is never written to a file
or to Redis, whose persistence settings are not ours to rely on.
"""

from __future__ import annotations

import hashlib
import textwrap
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING

import numpy as np
from django.conf import settings
from django.core.cache import caches
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, pixel_array
from pydicom.uid import UID

from imaging.storage import StorageError, encrypted_read
from imaging.transcoding import decodable_syntaxes

if TYPE_CHECKING:
    from imaging.models import Instance

FORMATS = {"png": "image/png", "jpeg": "image/jpeg"}


@dataclass(frozen=True)
class Window:
    """A VOI window in the units after the Modality LUT (HU for CT). ``function`` is one of PS3.3
    C.11.2.1.3's VOI LUT Functions, as PS3.18 §8.3.5.1.4 names them in the ``window`` parameter."""

    center: float
    width: float
    function: str = "linear"  # linear | linear-exact | sigmoid

    def query(self) -> str:
        """The WADO-RS ``window=`` value."""
        return f"{self.center:g},{self.width:g}" + ("" if self.function == "linear" else f",{self.function}")


@dataclass(frozen=True)
class Preset:
    key: str  # keyboard shortcut in the viewer
    name: str
    window: Window


# CT presets in HU (centre/width), the conventional values reading rooms use.
PRESETS: tuple[Preset, ...] = (
    Preset("1", "Brain", Window(40, 80)),
    Preset("2", "Subdural", Window(75, 215)),
    Preset("3", "Stroke", Window(40, 40)),  # narrow: early ischaemic grey/white loss
    Preset("4", "Bone", Window(500, 2000)),
    Preset("5", "Lung", Window(-600, 1500)),
    Preset("6", "Abdomen", Window(40, 400)),
)
VOI_FUNCTIONS = ("linear", "linear-exact", "sigmoid")


def presets_for(modality: str) -> tuple[Preset, ...]:
    """Window presets that mean something for the modality: the HU presets only for CT (an MR's or
    a radiograph's pixel values are not Hounsfield units); other modalities use the image's own
    window and window/level by drag."""
    return PRESETS if modality == "CT" else ()


class RenderError(Exception):
    """A frame that cannot be rendered; ``status`` is the HTTP answer."""

    status = 415

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class FrameNotFound(RenderError):
    status = 404


class UnsupportedImage(RenderError):
    """No pixel data, or pixel data pydicom cannot decode with what is installed."""

    status = 415


class NotAnImage(UnsupportedImage):
    """An object without pixel data (an SR, a key object): not an image that fails to display."""


class BrokenImage(RenderError):
    """Pixel data in a syntax ReadRoom decodes, but broken (truncated, a bad fragment, a value of
    the image description that is not what its VR says): the client's fault to report, not a 500."""

    status = 422


# --- pure steps ----------------------------------------------------------------------------------


def window_parse(value: str) -> Window:
    """``"40,80"`` or ``"40,80,sigmoid"`` (PS3.18 §8.3.5.1.4) → Window; ValueError when malformed."""
    parts = [p.strip() for p in value.split(",")]
    if len(parts) not in (2, 3):
        raise ValueError("window is center,width[,function]")
    center, width = float(parts[0]), float(parts[1])
    function = parts[2].lower() if len(parts) == 3 else "linear"
    if function not in VOI_FUNCTIONS:
        raise ValueError(f"window function must be one of {', '.join(VOI_FUNCTIONS)}")
    if not np.isfinite(center) or not np.isfinite(width) or width <= 0:
        raise ValueError("window width must be positive")
    if function == "linear" and width < 1:
        raise ValueError("a linear window is at least 1 wide (PS3.3 C.11.2.1.2.1)")
    return Window(center, width, function)


@dataclass(frozen=True)
class Viewport:
    """PS3.18 §8.3.5.1.3 ``viewport=vw,vh[,sx,sy,sw,sh]``: the output fits in vw×vh pixels, aspect
    ratio kept; the optional source region crops first, a negative sw or sh flips that axis."""

    width: int
    height: int
    region: tuple[int, int, int, int] | None = None  # sx, sy, sw, sh

    def query(self) -> str:
        values = (self.width, self.height, *(self.region or ()))
        return ",".join(str(v) for v in values)


VIEWPORT_MAX = 4096  # a rendered image larger than this is not a thumbnail nor a screen


def viewport_parse(value: str) -> Viewport:
    """``"128,128"`` or ``"512,512,0,0,256,256"`` → Viewport; ValueError when malformed."""
    try:
        numbers = [int(p.strip()) for p in value.split(",")]
    except ValueError:
        raise ValueError("viewport is vw,vh[,sx,sy,sw,sh] in whole pixels") from None
    if len(numbers) not in (2, 6):
        raise ValueError("viewport is vw,vh or vw,vh,sx,sy,sw,sh")
    width, height = numbers[:2]
    if not (0 < width <= VIEWPORT_MAX and 0 < height <= VIEWPORT_MAX):
        raise ValueError(f"viewport width and height are 1 to {VIEWPORT_MAX} pixels")
    region = tuple(numbers[2:]) if len(numbers) == 6 else None
    if region and (region[0] < 0 or region[1] < 0 or region[2] == 0 or region[3] == 0):
        raise ValueError("the source region starts at sx,sy >= 0 and sw,sh are not 0")
    return Viewport(width, height, region)


def viewport_fit(pixels: np.ndarray, viewport: Viewport) -> np.ndarray:
    """Crop (and flip) the source region, then scale to fit the viewport keeping the aspect ratio."""
    if viewport.region:
        sx, sy, sw, sh = viewport.region
        rows, columns = pixels.shape[:2]
        if sx >= columns or sy >= rows:
            raise FrameNotFound(f"the source region starts outside the {columns}×{rows} image")
        pixels = pixels[sy : sy + abs(sh), sx : sx + abs(sw)]
        pixels = pixels[:, ::-1] if sw < 0 else pixels
        pixels = pixels[::-1] if sh < 0 else pixels
    rows, columns = pixels.shape[:2]
    scale = min(viewport.width / columns, viewport.height / rows)
    size = (max(1, round(columns * scale)), max(1, round(rows * scale)))
    if size == (columns, rows):
        return np.ascontiguousarray(pixels)
    image = Image.fromarray(np.ascontiguousarray(pixels), mode="L" if pixels.ndim == 2 else "RGB")
    return np.asarray(
        image.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR)
    )


def modality_lut(stored: np.ndarray, slope: float = 1.0, intercept: float = 0.0) -> np.ndarray:
    """Rescale stored values to output units (PS3.3 C.11.1.1.2): ``value * slope + intercept``."""
    return stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def voi_apply(values: np.ndarray, window: Window, y_min: float = 0.0, y_max: float = 255.0) -> np.ndarray:
    """The VOI LUT function (PS3.3 C.11.2.1.2.1 linear, C.11.2.1.3.2 linear exact, C.11.2.1.3.1
    sigmoid) mapping modality values to [y_min, y_max]."""
    c, w = np.float32(window.center), np.float32(window.width)
    x = values.astype(np.float32, copy=False)
    span = np.float32(y_max - y_min)
    if window.function == "linear-exact":
        y = ((x - c) / w + np.float32(0.5)) * span + np.float32(y_min)
    elif window.function == "sigmoid":
        y = span / (np.float32(1.0) + np.exp(np.float32(-4.0) * (x - c) / w)) + np.float32(y_min)
    else:
        # if x <= c - 0.5 - (w-1)/2: y_min; if x > c - 0.5 + (w-1)/2: y_max;
        # else ((x - (c - 0.5)) / (w-1) + 0.5) * span + y_min.  w == 1 is a threshold at c - 0.5.
        lower = c - np.float32(0.5) - (w - np.float32(1)) / np.float32(2)
        upper = c - np.float32(0.5) + (w - np.float32(1)) / np.float32(2)
        if w > 1:
            y = ((x - (c - np.float32(0.5))) / (w - np.float32(1)) + np.float32(0.5)) * span + np.float32(
                y_min
            )
        else:
            y = np.full_like(x, np.float32(y_max))
        y = np.where(x <= lower, np.float32(y_min), np.where(x > upper, np.float32(y_max), y))
    return np.clip(y, y_min, y_max)


def to_uint8(values: np.ndarray) -> np.ndarray:
    return np.rint(values).astype(np.uint8)


def default_window(ds: Dataset, values: np.ndarray) -> Window:
    """The window the modality recommends (Window Center/Width, first of several, with its VOI LUT
    Function), else one spanning the frame's values."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center not in (None, "") and width not in (None, ""):
        first_c = center[0] if _multi(center) else center
        first_w = width[0] if _multi(width) else width
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().lower().replace("_", "-")
        try:
            if float(first_w) >= 1:
                return Window(
                    float(first_c), float(first_w), function if function in VOI_FUNCTIONS else "linear"
                )
        except (TypeError, ValueError):
            pass
    low, high = float(np.min(values)), float(np.max(values))
    return Window((low + high + 1) / 2, max(high - low + 1, 1.0))


def _multi(value) -> bool:
    return isinstance(value, list | tuple) or type(value).__name__ == "MultiValue"


def grayscale_render(stored: np.ndarray, ds: Dataset, window: Window | None) -> np.ndarray:
    """Modality LUT → VOI window → 8 bits, inverted for MONOCHROME1."""
    if "ModalityLUTSequence" in ds:
        values = apply_modality_lut(stored, ds).astype(np.float32)
    else:
        values = modality_lut(
            stored, float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        )
    out = voi_apply(values, window or default_window(ds, values))
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        out = np.float32(255) - out
    return to_uint8(out)


def color_render(pixels: np.ndarray, ds: Dataset) -> np.ndarray:
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
        return to_uint8(pixels.astype(np.float32) / 65535 * 255) if pixels.dtype != np.uint8 else pixels
    if pixels.dtype != np.uint8:  # e.g. 16-bit RGB
        top = float(2 ** int(ds.get("BitsStored", 16)) - 1)
        return to_uint8(np.clip(pixels.astype(np.float32) / top * 255, 0, 255))
    return pixels


def image_encode(pixels: np.ndarray, fmt: str, quality: int = 90) -> bytes:
    image = Image.fromarray(pixels, mode="L" if pixels.ndim == 2 else "RGB")
    buffer = BytesIO()
    if fmt == "jpeg":
        image.save(buffer, "JPEG", quality=max(1, min(100, quality)))
    else:
        image.save(buffer, "PNG", compress_level=3)  # speed over a few % of size: it is cached briefly
    return buffer.getvalue()


def error_image(message: str, size: tuple[int, int] = (512, 512)) -> bytes:
    """A PNG that says why there is no image, for an ``<img>`` in the viewer."""
    image = Image.new("L", size, 24)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=18)
    y = 24
    for line in ["Cannot display this image", "", *textwrap.wrap(message, 44)][:18]:
        draw.text((24, y), line, fill=235, font=font)
        y += 26
    buffer = BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


# --- decoding ------------------------------------------------------------------------------------


def part10_dataset(part10: bytes) -> Dataset:
    """A decrypted Part 10 file parsed (pixels included); UnsupportedImage when it is not DICOM."""
    try:
        return dcmread(BytesIO(part10))
    except (InvalidDicomError, EOFError, ValueError) as exc:
        raise UnsupportedImage(f"the stored object is not readable DICOM: {exc}") from exc


def frame_decode(
    part10: bytes, frame_index: int, dataset: Dataset | None = None
) -> tuple[np.ndarray, Dataset]:
    """Decode one frame (0-based) of a Part 10 file: the stored pixel values and the dataset.
    ``dataset``: ``part10`` parsed already (``part10_dataset``); it is read, never changed."""
    ds = dataset if dataset is not None else part10_dataset(part10)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        sop_class = UID(str(ds.get("SOPClassUID", "")))
        raise NotAnImage(f"this object has no image ({sop_class.name or sop_class})")
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise BrokenImage(f"Number of Frames is not a number: {exc}") from exc
    if not 0 <= frame_index < frames:
        raise FrameNotFound(f"frame {frame_index + 1} does not exist (the instance has {frames})")
    try:
        pixels = pixel_array(ds, index=frame_index if frames > 1 else None)
    except Exception as exc:  # pydicom raises several types when no decoder plugin can handle it
        syntax = UID(str(getattr(ds.file_meta, "TransferSyntaxUID", "")))
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        if str(syntax) in decodable_syntaxes():
            raise BrokenImage(f"the {syntax.name or syntax} pixel data is broken: {detail}") from exc
        raise UnsupportedImage(
            f"pixel data in {syntax.name or syntax} cannot be decoded here ({detail}); "
            "retrieve the instance with WADO-RS and view it in a workstation viewer"
        ) from exc
    return pixels, ds


def frame_pixels(
    part10: bytes, frame_index: int, window: Window | None, dataset: Dataset | None = None
) -> np.ndarray:
    """Decode and render one frame to 8-bit grayscale or RGB (``dataset``: as ``frame_decode``)."""
    pixels, ds = frame_decode(part10, frame_index, dataset)
    try:
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        photometric = str(ds.get("PhotometricInterpretation", "")).strip()
        if samples == 1 and photometric != "PALETTE COLOR":
            return grayscale_render(pixels, ds, window)
        return color_render(pixels, ds)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        # e.g. a Rescale Slope that is not a number, a palette LUT that does not fit its descriptor
        raise BrokenImage(f"the image description is broken: {str(exc)[:200] or type(exc).__name__}") from exc


def part10_frame_count(part10: bytes) -> int:
    """Number of Frames of a decrypted Part 10 file, from its header (1 when it does not say)."""
    try:
        ds = dcmread(BytesIO(part10), stop_before_pixels=True)
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (InvalidDicomError, EOFError, ValueError, TypeError):
        return 1  # rendering the first frame says what is wrong with it


# --- the entry point with cache ------------------------------------------------------------------


def _cache_key(
    instance: Instance,
    frame_index: int,
    window: Window | None,
    fmt: str,
    quality: int,
    viewport: Viewport | None,
) -> str:
    # The SOP Instance UID is in the key, not only the row id, so a reused id (test databases) can
    # never serve another image; hashed to keep the key short and free of odd characters.
    uid = hashlib.sha1(instance.sop_instance_uid.encode(), usedforsecurity=False).hexdigest()[:16]
    win = window.query() if window else "file"
    view = viewport.query() if viewport else "full"
    return (
        f"readroom:frame:v2:{instance.pk}:{uid}:{frame_index}:{win}:{view}:{fmt}:"
        f"{quality if fmt == 'jpeg' else ''}"
    )


def _display_problem_record(instance: Instance, problem: RenderError) -> None:
    """An image with pixel data that cannot be shown is flagged on its study (not an object
    without pixels, such as an SR: that is not an image; nor a frame number that does not exist)."""
    if isinstance(problem, NotAnImage):
        return
    # imported here: this module imports no models, so the pure steps load without Django's apps
    from imaging.services import instance_display_problem_record

    instance_display_problem_record(instance_id=instance.pk, reason=problem.message)


def display_problem_find(
    instance: Instance, part10: bytes | None = None, dataset: Dataset | None = None
) -> str:
    """Why this stored image cannot be displayed, from its first and last frame decoded and rendered
    as the viewer would (``frame_pixels``), or "" (it displays, or it is no image: an SR).
    ``part10``: the file's decrypted bytes when the caller read them already; ``dataset``: those
    bytes parsed (``part10_dataset``): the frame count and both frames read that one parse (the
    decode check parsed each image three times, ≈ 2.3 ms of CPU each for a 512² CT slice)."""
    if part10 is None:
        try:
            part10 = encrypted_read(instance.storage_path)
        except StorageError as exc:
            return f"the stored file cannot be read: {exc}"
    if dataset is None:
        try:
            dataset = part10_dataset(part10)
        except UnsupportedImage as exc:
            return exc.message
    try:
        last = max(1, int(dataset.get("NumberOfFrames", 1) or 1)) - 1
    except (TypeError, ValueError):
        last = 0  # rendering the first frame says what is wrong with it
    for frame_index in sorted({0, last}):
        try:
            frame_pixels(part10, frame_index, None, dataset)
        except NotAnImage:
            return ""
        except (UnsupportedImage, BrokenImage) as exc:
            return f"frame {frame_index + 1}: {exc.message}" if frame_index else exc.message
    return ""


def frame_render(
    instance: Instance,
    frame_index: int = 0,
    window_center: float | None = None,
    window_width: float | None = None,
    fmt: str = "png",
    *,
    function: str = "linear",
    quality: int = 90,
    viewport: Viewport | None = None,
    part10: bytes | None = None,
) -> bytes:
    """One frame (0-based ``frame_index``) of a stored instance as PNG or JPEG bytes, windowed with
    centre/width (modality units, e.g. HU) or the file's own window when none is given, fitted
    to ``viewport`` when one is given. ``part10``: the instance's file, when the caller has
    decrypted it already (a study's or series' rendered answer renders every frame of a file from
    one read).

    Raises RenderError (FrameNotFound, UnsupportedImage) with a message for the user."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}")
    window = None
    if window_center is not None and window_width is not None:
        window = Window(float(window_center), float(window_width), function)
    key = _cache_key(instance, frame_index, window, fmt, quality, viewport)
    cached = caches["frames"].get(key)
    if cached is not None:
        return cached
    try:
        if part10 is None:
            part10 = encrypted_read(instance.storage_path)
        pixels = frame_pixels(part10, frame_index, window)
    except StorageError as exc:
        problem = UnsupportedImage(f"the stored file cannot be read: {exc}")
        _display_problem_record(instance, problem)
        raise problem from exc
    except (UnsupportedImage, BrokenImage) as exc:
        _display_problem_record(instance, exc)
        raise
    if viewport is not None:
        pixels = viewport_fit(pixels, viewport)
    rendered = image_encode(pixels, fmt, quality)
    if len(rendered) <= getattr(settings, "READROOM_RENDER_CACHE_MAX_BYTES", 4 * 1024 * 1024):
        caches["frames"].set(key, rendered, getattr(settings, "READROOM_RENDER_CACHE_SECONDS", 120))
    return rendered
