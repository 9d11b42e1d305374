"""Transfer syntaxes: which ReadRoom can decode, and transcoding to native little endian for WADO-RS.

The decoders are pydicom's own, with the pylibjpeg plugins (libjpeg: JPEG Lossless, JPEG-LS, 12-bit
JPEG Extended; openjpeg: JPEG 2000 and HTJ2K; rle) that pyproject installs. Which syntaxes are
decodable is asked of pydicom at run time rather than listed here, so the SCP accepts exactly what
the installed decoders handle (a missing plugin narrows what is accepted instead of letting images in
that can never be shown).

Transcoding goes one way: from whatever is stored to an uncompressed little-endian syntax (Explicit
VR Little Endian is PS3.18 §8.7.3.5's default). ReadRoom does not encode into compressed syntaxes:
a client asking for one that is not stored gets 406 (``transfer-syntax=*`` always works)."""

from __future__ import annotations

from functools import cache
from io import BytesIO

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder, pixel_array
from pydicom.pixels.decoders.base import DecodeRunner
from pydicom.uid import (
    UID,
    AllTransferSyntaxes,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

# What ReadRoom transcodes *to*: uncompressed little endian (pixel bytes identical in both).
NATIVE_TARGETS = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
UNCOMPRESSED = frozenset(
    {ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian}
)


class TranscodeError(Exception):
    """The stored object cannot be given in the syntax asked for; ``message`` says why."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@cache
def decodable_syntaxes() -> frozenset[str]:
    """Every transfer syntax whose pixel data pydicom can decode with the plugins installed."""
    found = set()
    for uid in AllTransferSyntaxes:
        try:
            decoder = get_decoder(uid)
        except NotImplementedError:
            continue
        if decoder.is_available:
            found.add(str(uid))
    return frozenset(found)


def syntax_decodable(uid: str) -> bool:
    """A file without a transfer syntax in its meta is read as pydicom guesses: native, decodable."""
    return not uid or uid in decodable_syntaxes()


def syntax_name(uid: str) -> str:
    return UID(uid).name or uid


def _dataset(part10: bytes) -> Dataset:
    try:
        return dcmread(BytesIO(part10))
    except (InvalidDicomError, EOFError, ValueError, OSError) as exc:
        raise TranscodeError(f"the stored object is not readable DICOM: {exc}") from exc


def _pixels_native(ds: Dataset) -> None:
    """Replace encapsulated or big-endian pixel data by native little-endian bytes, in place, and
    decode every raw element so the dataset can be written in another encoding (a file whose meta
    says explicit VR but whose body is implicit holds elements without a VR until then)."""
    source = str(ds.file_meta.TransferSyntaxUID)
    for _ in ds.iterall():
        pass
    if "PixelData" in ds and UID(source).is_compressed:
        # pydicom decodes every frame and fixes Photometric Interpretation (YBR → RGB). The SOP
        # Instance UID stays: the same image, only encoded otherwise (PS3.18 §8.7.3.5 transcoding).
        ds.decompress(generate_instance_uid=False)
    elif "PixelData" in ds and source == ExplicitVRBigEndian:
        # Swap the stored words as they are (planar configuration and frame layout unchanged): OW
        # is 16-bit words, so 8-bit pixels in OW are swapped in pairs too (PS3.5 §7.3).
        element = ds["PixelData"]
        bits = int(ds.BitsAllocated)
        unit = bits // 8 if bits > 8 else (2 if element.VR == "OW" else 1)
        if unit > 1:
            data = bytes(element.value)
            usable = len(data) - len(data) % unit
            swapped = np.frombuffer(data[:usable], dtype=f">u{unit}").astype(f"<u{unit}").tobytes()
            element.value = swapped + data[usable:]
    ds.set_original_encoding(False, True)


def instance_transcode(part10: bytes, target: str) -> bytes:
    """The Part 10 file in ``target`` (a NATIVE_TARGETS syntax). TranscodeError says why not."""
    if target not in NATIVE_TARGETS:
        raise TranscodeError(
            f"ReadRoom sends instances as stored or in Explicit/Implicit VR Little Endian; "
            f"{syntax_name(target)} is not offered"
        )
    ds = _dataset(part10)
    source = str(ds.file_meta.TransferSyntaxUID)
    if source == target:
        return part10
    try:
        _pixels_native(ds)
        ds.file_meta.TransferSyntaxUID = target
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
    except Exception as exc:  # decoders raise many types on broken data; the client gets why
        raise _undecodable(source, exc) from exc
    return buffer.getvalue()


def pixel_problem(ds: Dataset) -> str:
    """Why the first frame of this object cannot be shown, or ``""`` (no pixel data, or it decodes).

    Run on receipt so a modality hears at C-STORE time that an image is broken (truncated, a
    bitstream no decoder reads, a frame count that is not a number) rather than it sitting in a
    study nobody can read. Only the first frame is decoded: it costs a few ms per image; a later
    frame that proves broken is answered 422 with the reason when it is asked for. ``ds``: the
    receive path's one parse of the object (its pixel data is read from it here)."""
    if "PixelData" not in ds:
        return ""
    source = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or ExplicitVRLittleEndian)
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return f"Number of Frames is not a number ({ds['NumberOfFrames'].value!r})"
    try:
        if source in _NATIVE_RECEIPT:
            _native_validate(ds, source)
        else:
            pixel_array(ds, index=0 if frames > 1 else None)
    except Exception as exc:  # decoders raise many types on broken data; the sender is told why
        return f"the {syntax_name(source)} pixel data cannot be decoded: {_first_line(exc)}"
    return ""


# Uncompressed syntaxes whose frames are the bytes as stored: what pydicom's decode can refuse is
# what its validation refuses (elements out of range or missing, data too short for the frames),
# and after it the "decode" is a copy of the bytes into an array (~0.7 ms of CPU for a 512² CT,
# a tenth of the SCP's per image). Deflated objects keep the full decode (not measured here).
_NATIVE_RECEIPT = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian})


def _native_validate(ds: Dataset, source: str) -> None:
    """The checks ``pixel_array`` makes before it decodes (``DecodeRunner.validate``, the same
    exceptions and messages), without making the array."""
    runner = DecodeRunner(UID(source))
    runner.set_source(ds)
    runner.validate()


def frame_native(ds: Dataset, index: int) -> bytes:
    """One frame (0-based) as native little-endian bytes (PS3.18 §8.7.3.3.2 octet-stream frames),
    decoded when stored compressed; colour frames come as RGB."""
    source = str(ds.file_meta.TransferSyntaxUID)
    bits = int(ds.BitsAllocated)
    if bits % 8:
        raise TranscodeError("bit-packed (1-bit) frames are not served as raw frames; use …/rendered")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if source in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * bits // 8
        data = ds.PixelData[index * size : (index + 1) * size]
        if len(data) != size:
            raise TranscodeError(f"the pixel data is truncated: frame {index + 1} is incomplete")
        return data
    try:
        pixels: np.ndarray = pixel_array(ds, index=index if frames > 1 else None)
    except Exception as exc:  # as above
        raise _undecodable(source, exc) from exc
    return pixels.astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()


def _undecodable(source: str, exc: Exception) -> TranscodeError:
    return TranscodeError(f"the {syntax_name(source)} pixel data cannot be decoded: {_first_line(exc)}")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def same_image(stored: bytes, incoming: bytes) -> bool:
    """True when two Part 10 objects hold the same data set in different transfer syntaxes (a
    lossless re-send by another route): both decoded to Explicit VR Little Endian compare equal,
    file meta aside. A lossy re-encoding, or any changed element, is different content."""
    try:
        ours = _dataset(stored)
        theirs = _dataset(incoming)
        if str(ours.file_meta.TransferSyntaxUID) == str(theirs.file_meta.TransferSyntaxUID):
            return False  # same syntax, different bytes: not a re-encoding
        normal = [_dataset(instance_transcode(data, ExplicitVRLittleEndian)) for data in (stored, incoming)]
    except TranscodeError:
        return False
    return normal[0] == normal[1]
