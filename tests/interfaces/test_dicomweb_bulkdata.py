"""WADO-RS metadata carries a BulkDataURI for pixel data and other large binary values (PS3.18
§8.7.3.5, F.2.6), and the bulkdata resource serves them, with the study's permission check and
PHI-read audit. The client is the real ``dicomweb-client`` over HTTP."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from auditlog.models import LogEntry
from django.core.cache import cache, caches
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.sequence import Sequence

from imaging.models import Study
from tests.dicom_data import ct_series
from tests.interfaces.test_dicomweb import stored_in, token_client
from tests.interfaces.test_dicomweb_syntaxes import JPEG_LOSSLESS, OCTET, parts, pydicom_file, stored

PIXEL_DATA, OVERLAY_DATA, ICON_SEQUENCE = "7FE00010", "60003000", "00880200"


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()  # the frame-read audit is de-duplicated per user and study
    yield
    cache.clear()
    caches["frames"].clear()


def with_bulk_elements(series):
    """An overlay plane (OW, 2 KB) and an icon image inside a sequence (its own pixel data, OB)."""
    for ds in series.datasets:
        ds.add_new(0x60000010, "US", 128)
        ds.add_new(0x60000011, "US", 128)
        ds.add_new(0x60000100, "US", 1)
        ds.add_new(OVERLAY_DATA, "OW", bytes(range(256)) * 8)
        icon = Dataset()
        icon.Rows = icon.Columns = 64
        icon.add_new(0x7FE00010, "OB", b"\x7f" * 4096)
        ds.IconImageSequence = Sequence([icon])
        ds.add_new(0x00091010, "OB", b"\x01\x02")  # small: inline
        ds.add_new(0x00090010, "LO", "READROOM TEST")
    return series


@pytest.mark.django_db(transaction=True)
def test_metadata_refers_to_bulk_data_and_it_is_served(live_server, admin_chicago, chicago, image_store):
    # given a two-slice CT with an overlay and an icon image, stored for Chicago
    series = with_bulk_elements(ct_series(count=2, accession="ACC-BULK"))
    stored_in(chicago, series)
    dicomweb = token_client(live_server, admin_chicago)

    # when its metadata is read
    (item, _) = dicomweb.retrieve_series_metadata(series.study_uid, series.series_uid)

    # then large binary values are BulkDataURIs under the instance (also inside a sequence), small
    # ones inline, and nothing else of the header is lost
    instance_path = (
        f"/dicomweb/studies/{series.study_uid}/series/{series.series_uid}/instances/{series.sop_uids[0]}"
    )
    icon = item[ICON_SEQUENCE]["Value"][0]
    uris = {
        PIXEL_DATA: item[PIXEL_DATA]["BulkDataURI"],
        OVERLAY_DATA: item[OVERLAY_DATA]["BulkDataURI"],
        ICON_SEQUENCE: icon[PIXEL_DATA]["BulkDataURI"],
    }
    # absolute URIs on the Host the client sent (dicomweb-client sends its host without the port)
    assert {key: urlsplit(uri).path for key, uri in uris.items()} == {
        PIXEL_DATA: f"{instance_path}/bulkdata/{PIXEL_DATA}",
        OVERLAY_DATA: f"{instance_path}/bulkdata/{OVERLAY_DATA}",
        ICON_SEQUENCE: f"{instance_path}/bulkdata/{ICON_SEQUENCE}/0/{PIXEL_DATA}",
    }
    assert set(item[PIXEL_DATA]) == set(item[OVERLAY_DATA]) == {"vr", "BulkDataURI"}
    assert item["00091010"] == {"vr": "OB", "InlineBinary": "AQI="}
    assert Dataset.from_json(item).Rows == 128

    # and each URI gives back the value: pixel data as its frame, the others as stored
    def fetched(key: str) -> list[bytes]:
        return dicomweb.retrieve_bulkdata(live_server.url + urlsplit(uris[key]).path)

    original = series.datasets[0]
    assert fetched(PIXEL_DATA) == [original.PixelData]
    assert fetched(OVERLAY_DATA) == [original[OVERLAY_DATA].value]
    assert fetched(ICON_SEQUENCE) == [b"\x7f" * 4096]

    # and the reads are PHI reads of the study, by the token's user
    study = Study.objects.get(study_instance_uid=series.study_uid)
    reads = LogEntry.objects.get_for_object(study).filter(action=LogEntry.Action.ACCESS)
    assert set(reads.values_list("actor__username", flat=True)) == {"admin_chicago"}


def test_bulkdata_is_refused_to_others_and_bad_references_are_404(
    client, admin_chicago, admin_lakeview, mso_mary, chicago, image_store
):
    series = with_bulk_elements(ct_series(count=1))
    stored_in(chicago, series)
    base = (
        f"/dicomweb/studies/{series.study_uid}/series/{series.series_uid}"
        f"/instances/{series.sop_uids[0]}/bulkdata"
    )
    # anonymous: 401; credentialing staff: 403; another facility's admin: 404, and no audit row
    assert client.get(f"{base}/{OVERLAY_DATA}").status_code == 401
    client.force_login(mso_mary)
    assert client.get(f"{base}/{OVERLAY_DATA}").status_code == 403
    client.force_login(admin_lakeview)
    for reference in (PIXEL_DATA, OVERLAY_DATA, f"{ICON_SEQUENCE}/0/{PIXEL_DATA}"):
        assert client.get(f"{base}/{reference}").status_code == 404, reference
    assert not LogEntry.objects.filter(action=LogEntry.Action.ACCESS).exists()

    # the owner: a single octet-stream when asked for, 404 for what is not bulk data or not there
    client.force_login(admin_chicago)
    single = client.get(f"{base}/{OVERLAY_DATA}", HTTP_ACCEPT="application/octet-stream")
    assert single.status_code == 200 and single["Content-Type"] == "application/octet-stream"
    assert single.content == series.datasets[0][OVERLAY_DATA].value
    for reference in ("00100010", "60003002", f"{ICON_SEQUENCE}/1/{PIXEL_DATA}", f"{ICON_SEQUENCE}/0", "zz"):
        answer = client.get(f"{base}/{reference}")
        assert answer.status_code == 404, reference
        assert "no bulk data" in answer.json()["detail"]
    assert client.get(f"{base}/{OVERLAY_DATA}", HTTP_ACCEPT="image/png").status_code == 406


def test_pixel_data_bulkdata_follows_the_frames_negotiation(client, admin_chicago, chicago, image_store):
    # given a JPEG Lossless image, received as C-STORE delivers it
    url = stored(chicago, pydicom_file(JPEG_LOSSLESS)) + f"/bulkdata/{PIXEL_DATA}"
    client.force_login(admin_chicago)
    # then its pixel data is the stored bitstream with transfer-syntax=*, decoded by default
    ((as_stored, bitstream),) = parts(client.get(url, HTTP_ACCEPT=f"{OCTET}; transfer-syntax=*"))
    ((decoded, pixels),) = parts(client.get(url))
    assert as_stored.endswith("transfer-syntax=1.2.840.10008.1.2.4.70")
    assert bitstream[:2] == b"\xff\xd8"  # a JPEG stream
    assert decoded.endswith("transfer-syntax=1.2.840.10008.1.2.1")
    ds = dcmread(get_testdata_file(JPEG_LOSSLESS))
    assert pixels == ds.pixel_array.tobytes()
