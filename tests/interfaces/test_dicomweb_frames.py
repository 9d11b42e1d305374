"""WADO-RS frames of a multi-frame instance, as OHIF asks for them: the frame sliced out of native
pixels, or its bitstream as stored, from a read of only the elements that locate it
(``interfaces.dicom.web.FRAME_LOCATING``); any other frame decoded from the whole file."""

from __future__ import annotations

from io import BytesIO

import numpy as np
from pydicom import dcmread
from pydicom.encaps import get_frame

from tests.interfaces.test_dicomweb_syntaxes import fresh_cache, parts, pydicom_file, stored  # noqa: F401

OHIF = "multipart/related; type=application/octet-stream; transfer-syntax=*"


def test_native_frames_are_the_stored_slices(client, admin_chicago, chicago, image_store):
    # given a 10-frame Enhanced MR stored uncompressed (pydicom's emri_small.dcm)
    part10 = pydicom_file("emri_small.dcm")
    ds = dcmread(BytesIO(part10))
    size = ds.Rows * ds.Columns * 2
    url = stored(chicago, part10)
    client.force_login(admin_chicago)
    # when frames 1, 3 and 10 are asked for as OHIF asks
    answer = client.get(f"{url}/frames/1,3,10", HTTP_ACCEPT=OHIF)
    # then each part is that frame's bytes, native little endian
    assert answer.status_code == 200
    assert [body for _, body in parts(answer)] == [
        ds.PixelData[(n - 1) * size : n * size] for n in (1, 3, 10)
    ]
    assert client.get(f"{url}/frames/11", HTTP_ACCEPT=OHIF).status_code == 404


def test_compressed_frames_as_stored_and_decoded(client, admin_chicago, chicago, image_store):
    # given the same MR stored RLE-compressed
    part10 = pydicom_file("emri_small_RLE.dcm")
    ds = dcmread(BytesIO(part10))
    url = stored(chicago, part10)
    client.force_login(admin_chicago)
    # when frame 4 is asked for as stored (OHIF) and decoded (no transfer syntax named)
    as_stored = client.get(f"{url}/frames/4", HTTP_ACCEPT=OHIF)
    decoded = client.get(f"{url}/frames/4", HTTP_ACCEPT="multipart/related; type=application/octet-stream")
    # then the first is the stored bitstream, the second the decoded pixels of that frame
    ((kind, bitstream),) = parts(as_stored)
    assert "1.2.840.10008.1.2.5" in kind
    assert bitstream == get_frame(ds.PixelData, 3, number_of_frames=10)
    ((_, pixels),) = parts(decoded)
    assert pixels == ds.pixel_array[3].astype("<u2" if ds.PixelRepresentation == 0 else "<i2").tobytes()
    assert np.frombuffer(pixels, "<u2").size == ds.Rows * ds.Columns
