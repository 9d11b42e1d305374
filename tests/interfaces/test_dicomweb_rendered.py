"""Rendered and thumbnail resources at the study, series, instance and frame levels, with
``viewport=`` (PS3.18 §8.3.5.1.3, §10.4.1.1.3–4), refused to whoever may not read the study."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from auditlog.models import LogEntry
from django.core.cache import cache, caches
from PIL import Image

from imaging.models import Instance
from imaging.rendering import Viewport, viewport_fit, viewport_parse
from tests.dicom_data import ct_series
from tests.interfaces.test_dicomweb import stored_in
from tests.interfaces.test_dicomweb_syntaxes import parts


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()
    yield
    cache.clear()
    caches["frames"].clear()


def image(response) -> Image.Image:
    assert response.status_code == 200, response.content[:200]
    return Image.open(BytesIO(response.content))


@pytest.fixture
def ct(chicago, image_store):
    series = ct_series(count=3)
    for index, ds in enumerate(series.datasets):  # three slices that look different
        ds.PixelData = (ds.pixel_array + 150 * index).astype(ds.pixel_array.dtype).tobytes()
    stored_in(chicago, series)
    return series


def urls(series) -> dict[str, str]:
    study = f"/dicomweb/studies/{series.study_uid}"
    one_series = f"{study}/series/{series.series_uid}"
    instance = f"{one_series}/instances/{series.sop_uids[1]}"
    return {"study": study, "series": one_series, "instance": instance, "frame": f"{instance}/frames/1"}


def test_thumbnails_at_every_level_are_small_and_fit_the_viewport(client, admin_chicago, ct):
    client.force_login(admin_chicago)
    at = urls(ct)
    # a thumbnail of each level, 128 pixels unless the viewport says otherwise
    for level, url in at.items():
        assert image(client.get(f"{url}/thumbnail")).size == (128, 128), level
    assert image(client.get(f"{at['series']}/thumbnail?viewport=64,32")).size == (32, 32)
    jpeg = image(client.get(f"{at['study']}/thumbnail?viewport=48,48", HTTP_ACCEPT="image/jpeg"))
    assert (jpeg.format, jpeg.size) == ("JPEG", (48, 48))
    # the study's and the series' thumbnail is the middle slice of the first series
    middle = client.get(f"{at['instance']}/thumbnail?window=40,400").content
    assert client.get(f"{at['study']}/thumbnail?window=40,400").content == middle
    assert client.get(f"{at['series']}/thumbnail?window=40,400").content == middle
    first = client.get(
        f"/dicomweb/studies/{ct.study_uid}/series/{ct.series_uid}/instances/{ct.sop_uids[0]}/thumbnail",
        {"window": "40,400"},
    )
    assert first.content != middle


def test_rendered_study_and_series_have_every_image_and_honour_the_viewport(client, admin_chicago, ct):
    client.force_login(admin_chicago)
    at = urls(ct)
    for level in ("study", "series"):
        answer = client.get(f"{at[level]}/rendered?viewport=64,64&window=40,80")
        assert answer.status_code == 200 and 'type="image/png"' in answer["Content-Type"]
        rendered = parts(answer)
        assert [content_type for content_type, _ in rendered] == ["image/png"] * 3
        assert {Image.open(BytesIO(body)).size for _, body in rendered} == {(64, 64)}
    # an instance and a frame: the full image unless a viewport is named
    assert image(client.get(f"{at['instance']}/rendered")).size == (128, 128)
    assert image(client.get(f"{at['frame']}/rendered?viewport=256,200")).size == (200, 200)
    # a source region: the left half, flipped, fitted into 100×100
    full = np.asarray(image(client.get(f"{at['instance']}/rendered")))
    region = image(client.get(f"{at['instance']}/rendered?viewport=64,128,0,0,-64,128"))
    assert region.size == (64, 128)
    assert (np.asarray(region) == full[:, :64][:, ::-1]).all()


def test_bad_viewports_and_media_types_are_refused_with_the_reason(client, admin_chicago, ct):
    client.force_login(admin_chicago)
    at = urls(ct)
    for bad in ("0,10", "10", "a,b", "10,10,0,0,0,5", "5000,10", "10,10,-1,0,5,5"):
        answer = client.get(f"{at['series']}/thumbnail", {"viewport": bad})
        assert answer.status_code == 400 and "viewport" in answer.json()["detail"], bad
    assert client.get(f"{at['instance']}/rendered?viewport=10,10,200,0,5,5").status_code == 404
    assert client.get(f"{at['study']}/rendered", HTTP_ACCEPT="image/gif").status_code == 406
    assert client.get(f"{at['frame'][:-1]}x/thumbnail").status_code == 400


def test_rendered_and_thumbnails_of_another_facility_are_404_and_not_audited(
    client, admin_lakeview, mso_mary, ct
):
    at = urls(ct)
    client.force_login(admin_lakeview)
    for level, url in at.items():
        for resource in ("rendered", "thumbnail"):
            assert client.get(f"{url}/{resource}").status_code == 404, (level, resource)
    assert not LogEntry.objects.filter(action=LogEntry.Action.ACCESS).exists()
    client.force_login(mso_mary)
    assert client.get(f"{at['study']}/thumbnail").status_code == 403
    client.logout()
    assert client.get(f"{at['series']}/rendered").status_code == 401


def test_viewport_fit_keeps_the_aspect_ratio():
    pixels = np.zeros((100, 300), dtype=np.uint8)
    assert viewport_fit(pixels, Viewport(150, 150)).shape == (50, 150)
    assert viewport_fit(pixels, viewport_parse("600,600")).shape == (200, 600)
    assert viewport_parse("512,512,0,0,256,256").query() == "512,512,0,0,256,256"


def test_a_rendered_study_decrypts_each_stored_file_once(client, admin_chicago, ct, monkeypatch):
    # given a spy on every decryption of a stored file, in DICOMweb and in rendering
    import imaging.rendering
    import interfaces.dicom.web

    reads = []
    for module in (imaging.rendering, interfaces.dicom.web):
        monkeypatch.setattr(module, "encrypted_read", _counted(module.encrypted_read, reads))
    client.force_login(admin_chicago)
    # when the study's three images are rendered
    answer = client.get(f"{urls(ct)['study']}/rendered?viewport=64,64")
    # then every frame is there, and each file was read and decrypted once (not for its frame
    # count and again for its frame)
    assert len(parts(answer)) == 3
    assert sorted(reads) == sorted(Instance.objects.values_list("storage_path", flat=True))


def _counted(read, reads: list[str]):
    def counted(path: str) -> bytes:
        reads.append(path)
        return read(path)

    return counted
