"""WADO-RS and transfer syntaxes (PS3.18 §8.7.3.5): the stored bytes for ``*`` or the stored syntax,
Explicit VR Little Endian by default (decoded with pydicom + pylibjpeg), 406 with the reason when a
syntax cannot be given; broken pixel data a 4xx with the reason; a re-send in another syntax keeps
the file and its index row in agreement."""

from __future__ import annotations

import re
from io import BytesIO

import numpy as np
import pytest
from django.core.cache import cache, caches
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, get_frame
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from imaging.models import Instance
from interfaces.dicom.receive import dicom_instance_receive
from tests.dicom_data import ct_series, part10_bytes

JPEG_LOSSLESS = "JPGLosslessP14SV1_1s_1f_8b.dcm"
JPEG_LS = "MR_small_jpeg_ls_lossless.dcm"
OCTET = 'multipart/related; type="application/octet-stream"'


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()
    yield
    cache.clear()
    caches["frames"].clear()


def pydicom_file(name: str) -> bytes:
    with open(get_testdata_file(name), "rb") as f:
        return f.read()


def stored(facility, part10: bytes) -> str:
    """The instance's WADO-RS URL once received as C-STORE delivers it."""
    assert dicom_instance_receive(facility=facility, part10=part10).ok
    ds = dcmread(BytesIO(part10), stop_before_pixels=True)
    return (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    )


def parts(response) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart/related answer."""
    boundary = re.search(r'boundary="?([^";]+)', response["Content-Type"]).group(1).encode()
    body = b"".join(response.streaming_content) if response.streaming else response.content
    found = []
    for chunk in body.split(b"--" + boundary)[1:-1]:
        head, _, data = chunk.partition(b"\r\n\r\n")
        content_type = re.search(rb"Content-Type: *([^\r\n]+)", head, re.I).group(1).decode()
        found.append((content_type, data.removesuffix(b"\r\n")))
    return found


@pytest.mark.parametrize("name", [JPEG_LOSSLESS, JPEG_LS, "MR_small_RLE.dcm", "MR_small_bigendian.dcm"])
def test_instances_and_frames_are_transcoded_to_explicit_vr_little_endian(
    name, client, admin_chicago, chicago, image_store
):
    original = pydicom_file(name)
    url = stored(chicago, original)
    expected = dcmread(BytesIO(original)).pixel_array
    client.force_login(admin_chicago)

    # as stored for * (and for the stored syntax itself)
    stored_syntax = str(dcmread(BytesIO(original), stop_before_pixels=True).file_meta.TransferSyntaxUID)
    as_stored = client.get(url, HTTP_ACCEPT='multipart/related; type="application/dicom"; transfer-syntax=*')
    [(part_type, data)] = parts(as_stored)
    assert data == original and part_type.endswith(f"transfer-syntax={stored_syntax}")
    named = f'multipart/related; type="application/dicom"; transfer-syntax={stored_syntax}'
    assert parts(client.get(url, HTTP_ACCEPT=named))[0][1] == original

    # Explicit VR Little Endian by default: decoded, the same pixels, the same header
    for accept in ("", 'multipart/related; type="application/dicom"', "*/*"):
        [(part_type, data)] = parts(client.get(url, HTTP_ACCEPT=accept) if accept else client.get(url))
        assert part_type == f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
        ds = dcmread(BytesIO(data))
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert np.array_equal(ds.pixel_array, expected)
        assert ds.SOPInstanceUID == dcmread(BytesIO(original)).SOPInstanceUID
    implicit = client.get(url, HTTP_ACCEPT=f"application/dicom; transfer-syntax={ImplicitVRLittleEndian}")
    assert implicit.status_code == 200
    assert dcmread(BytesIO(implicit.content)).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian

    # frames: octet-stream is native little endian (decoded); * is the stored bitstream
    frame = client.get(f"{url}/frames/1", HTTP_ACCEPT=OCTET)
    [(part_type, data)] = parts(frame)
    assert part_type == f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    assert data == expected.astype(expected.dtype.newbyteorder("<")).tobytes()
    raw = parts(client.get(f"{url}/frames/1", HTTP_ACCEPT=f"{OCTET}; transfer-syntax=*"))[0]
    if stored_syntax != ExplicitVRBigEndian:
        source = dcmread(BytesIO(original))
        if source.file_meta.TransferSyntaxUID.is_compressed:
            assert raw == (
                f"application/octet-stream; transfer-syntax={stored_syntax}",
                get_frame(source.PixelData, 0, number_of_frames=1),
            )

    # a compressed syntax that is not stored: 406 with the reason
    j2k = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.90'
    refused = client.get(url, HTTP_ACCEPT=j2k)
    assert refused.status_code == 406 and "Explicit" in refused.json()["detail"]
    refused = client.get(f"{url}/frames/1", HTTP_ACCEPT='multipart/related; type="image/jp2"')
    assert refused.status_code == 406 and "transfer-syntax=*" in refused.json()["detail"]


def broken_in_store(facility, good: bytes, broken: bytes) -> str:
    """A file that went bad after it was accepted (or was stored before receipt decoded frame 1):
    the good image is received, then its stored file replaced by the broken bytes."""
    from imaging.storage import encrypted_write

    url = stored(facility, good)
    row = Instance.objects.get(
        sop_instance_uid=dcmread(BytesIO(good), stop_before_pixels=True).SOPInstanceUID
    )
    encrypted_write(row.storage_path, broken)
    return url


def test_broken_pixel_data_is_refused_on_receipt_and_a_4xx_with_the_reason_later(
    client, admin_chicago, chicago, image_store
):
    # a JPEG Lossless frame that is a JPEG header and noise, and a native CT cut in half
    good_jpeg = pydicom_file(JPEG_LOSSLESS)
    ds = dcmread(BytesIO(good_jpeg))
    ds.PixelData = encapsulate([get_frame(ds.PixelData, 0, number_of_frames=1)[:20] + b"\x12" * 200])
    bad_jpeg = part10_bytes(ds)
    native = ct_series(count=1).datasets[0]
    good_native = part10_bytes(native)
    native.PixelData = native.PixelData[: len(native.PixelData) // 2]
    bad_native = part10_bytes(native)

    # on receipt: refused with a status that says why, and kept in quarantine
    # (the cut native frame is caught by the cheaper header-only length check, before any decode)
    result = dicom_instance_receive(facility=chicago, part10=bad_jpeg)
    assert result.status == 0xC211 and "cannot be decoded" in result.reason
    result = dicom_instance_receive(facility=chicago, part10=bad_native)
    assert result.status == 0xA900 and "Rows x Columns" in result.reason

    # a stored file that proves broken later: 4xx with the reason, never a 500
    jpeg = broken_in_store(chicago, good_jpeg, bad_jpeg)
    cut = broken_in_store(chicago, good_native, bad_native)
    client.force_login(admin_chicago)
    for url in (jpeg, cut):
        rendered = client.get(f"{url}/rendered")
        assert rendered.status_code == 422 and "broken" in rendered["Warning"]
        frame = client.get(f"{url}/frames/1", HTTP_ACCEPT=OCTET)
        assert 400 <= frame.status_code < 500 and "pixel data" in frame.json()["detail"]
    refused = client.get(jpeg)
    assert refused.status_code == 406 and "cannot be decoded" in refused.json()["detail"]
    # the stored bytes are still there as they are
    kept = client.get(jpeg, HTTP_ACCEPT='multipart/related; type="application/dicom"; transfer-syntax=*')
    assert kept.status_code == 200


def test_a_resend_in_another_syntax_updates_the_row_with_the_file(
    client, admin_chicago, chicago, image_store
):
    ds = ct_series(count=1).datasets[0]
    url = stored(chicago, part10_bytes(ds))
    pixels = ds.pixel_array.copy()
    ds.compress(RLELossless, generate_instance_uid=False)
    resent = part10_bytes(ds)
    assert dicom_instance_receive(facility=chicago, part10=resent).ok

    row = Instance.objects.get()
    assert (row.transfer_syntax_uid, row.size_bytes) == (RLELossless, len(resent))
    client.force_login(admin_chicago)
    [(_, data)] = parts(client.get(f"{url}/frames/1", HTTP_ACCEPT=OCTET))
    assert data == pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    any_syntax = parts(client.get(f"{url}/frames/1", HTTP_ACCEPT=f"{OCTET}; transfer-syntax=*"))
    assert any_syntax[0][0].endswith(RLELossless)
    star = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    assert parts(client.get(url, HTTP_ACCEPT=star))[0][1] == resent


def test_stow_of_a_syntax_that_cannot_be_decoded_is_refused_and_kept(client, admin_chicago, image_store):
    from interfaces.models import QuarantinedObject

    ds = ct_series(count=1).datasets[0]
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder in pydicom
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    client.force_login(admin_chicago)
    boundary = "b0undary"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + part10_bytes(ds)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    answer = client.generic(
        "POST",
        "/dicomweb/studies",
        body,
        content_type=f'multipart/related; type="application/dicom"; boundary="{boundary}"',
    )
    assert answer.status_code == 409
    failed = answer.json()["00081198"]["Value"][0]
    assert failed["00081197"]["Value"] == [0xC122]  # Referenced Transfer Syntax not supported
    kept = QuarantinedObject.objects.get()
    assert "MPEG2" in kept.reason and not Instance.objects.exists()
