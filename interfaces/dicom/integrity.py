"""Refuse at C-STORE (and STOW) what a modality must resend: an object cut short, pixel data whose
length contradicts Rows × Columns × frames × samples × bits (uncompressed), or pixel data larger
than ``READROOM_DICOM_MAX_PIXEL_BYTES`` (issue #15: "objects claiming 4 GB were accepted").

It reads the receive path's one parse (``header.dataset_read``, values over 1 KB deferred): the
pixel element's declared length and offset, never its bytes."""

from __future__ import annotations

from django.conf import settings
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

PIXEL_DATA = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF  # encapsulated (compressed) pixel data: fragments, no fixed length


def pixel_data_problem(part10: bytes, ds: Dataset) -> str | None:
    """Why the object must be refused, or None. ``ds``: ``part10`` as parsed by ``dataset_read``."""
    raw = ds._dict.get(PIXEL_DATA)  # the raw element: its declared length without its value
    if raw is None:
        return None
    length, value_tell = getattr(raw, "length", None), getattr(raw, "value_tell", None)
    if length is None or value_tell is None or length == UNDEFINED_LENGTH:
        return None
    limit = settings.READROOM_DICOM_MAX_PIXEL_BYTES
    if length > limit:
        return f"pixel data of {length} bytes exceeds the {limit}-byte limit"
    # Deflated: value_tell counts in the inflated dataset, not in the bytes received (a cut deflate
    # stream fails to inflate, and the receive path's decode check refuses it)
    deflated = str(getattr(ds.file_meta, "TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian
    if not deflated and value_tell + length > len(part10):
        return f"object truncated: pixel data declares {length} bytes, {len(part10) - value_tell} received"
    expected = _expected_length(ds)
    if expected is not None and length not in (expected, expected + 1):  # odd lengths pad to even
        return f"pixel data is {length} bytes; Rows x Columns x frames x samples x bits give {expected}"
    return None


def _expected_length(ds: Dataset) -> int | None:
    try:
        rows, columns, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
        frames = int(ds.get("NumberOfFrames") or 1)
        samples = int(ds.get("SamplesPerPixel") or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    pixels = rows * columns * frames * samples
    if str(ds.get("PhotometricInterpretation", "")).startswith("YBR_FULL_422"):
        pixels = pixels * 2 // 3  # two chroma samples per two pixels
    return (pixels * bits + 7) // 8
