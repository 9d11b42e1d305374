"""The viewer: frames rendered on the server from the decrypted files with the Modality LUT and a
VOI window (PS3.3 C.11), MONOCHROME1 inverted, cached; the page is permission-checked and audited."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pydicom
import pytest
from auditlog.models import LogEntry
from django.core.cache import cache, caches
from PIL import Image
from pydicom.data import get_testdata_file

from imaging import storage
from imaging.models import Instance, Study
from imaging.rendering import (
    PRESETS,
    UnsupportedImage,
    Window,
    frame_render,
    voi_apply,
    window_parse,
)
from interfaces.dicom.receive import dicom_instance_receive
from tests.dicom_data import ct_series, part10_bytes, with_hounsfield


@pytest.fixture(autouse=True)
def image_store(settings, tmp_path):
    settings.READROOM_STORAGE_DIR = tmp_path / "storage"
    settings.READROOM_STORAGE_FSYNC = False
    storage._keys.cache_clear()
    cache.clear()
    caches["frames"].clear()
    yield settings.READROOM_STORAGE_DIR
    storage._keys.cache_clear()
    cache.clear()
    caches["frames"].clear()


def receive(facility, *part10s: bytes) -> list[Instance]:
    results = [dicom_instance_receive(facility=facility, part10=p) for p in part10s]
    assert all(r.ok for r in results), [r.reason for r in results]
    return [Instance.objects.get(pk=r.recorded.instance_id) for r in results]


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(BytesIO(png)))


# the same 4x4 frame: one column each of HU 0, 40, 80 and 1000
HU_COLUMNS = np.array([[0, 40, 80, 1000]] * 4)


# --- rendering ----------------------------------------------------------------------------------


def test_brain_window_maps_hounsfield_units_to_grey_levels(chicago):
    # given a CT slice whose stored values are HU + 1024 (Rescale Intercept −1024)
    ds = with_hounsfield(ct_series(count=1).datasets[0], HU_COLUMNS)
    (instance,) = receive(chicago, part10_bytes(ds))
    # when rendered with the brain window 40/80
    out = pixels(frame_render(instance, 0, 40, 80, "png"))
    # then HU 0 is black, 40 mid-grey, 80 and above white (PS3.3 C.11.2.1.2.1)
    assert out.shape == (4, 4)
    zero, forty, eighty, bone = out[0]
    assert (zero, eighty, bone) == (0, 255, 255)
    assert abs(int(forty) - 128) <= 1


def test_monochrome1_is_inverted(chicago):
    ds = with_hounsfield(ct_series(count=1).datasets[0], HU_COLUMNS, photometric="MONOCHROME1")
    (instance,) = receive(chicago, part10_bytes(ds))
    zero, forty, eighty, _ = pixels(frame_render(instance, 0, 40, 80, "png"))[0]
    assert (zero, eighty) == (255, 0)
    assert abs(int(forty) - 127) <= 1


def test_without_a_window_the_files_own_is_used(chicago):
    ds = with_hounsfield(ct_series(count=1).datasets[0], HU_COLUMNS)
    ds.WindowCenter, ds.WindowWidth = 500, 2000  # bone, as the modality suggests
    (instance,) = receive(chicago, part10_bytes(ds))
    assert (pixels(frame_render(instance)) == pixels(frame_render(instance, 0, 500, 2000))).all()


def test_voi_functions_of_the_standard():
    x = np.array([-100, 0, 40, 80, 200], dtype=np.float32)
    assert np.rint(voi_apply(x, Window(40, 80, "linear-exact"))).tolist() == [0, 0, 128, 255, 255]
    sigmoid = voi_apply(x, Window(40, 80, "sigmoid"))
    assert sigmoid[2] == pytest.approx(127.5) and sigmoid[0] < 3 and sigmoid[-1] > 252
    assert window_parse("-600,1500") == Window(-600, 1500)
    assert window_parse("40,80,sigmoid").function == "sigmoid"
    for bad in ("40", "40,0", "40,80,gamma", "a,b"):
        with pytest.raises(ValueError):
            window_parse(bad)


def test_presets_are_the_reading_room_ones():
    assert {p.name: (p.window.center, p.window.width) for p in PRESETS} == {
        "Brain": (40, 80),
        "Subdural": (75, 215),
        "Stroke": (40, 40),
        "Bone": (500, 2000),
        "Lung": (-600, 1500),
        "Abdomen": (40, 400),
    }
    assert [p.key for p in PRESETS] == ["1", "2", "3", "4", "5", "6"]


def test_rendered_frames_come_from_the_cache(chicago, image_store):
    (instance,) = receive(chicago, ct_series(count=1, size=512).part10()[0])
    first = frame_render(instance, 0, 40, 80, "png")
    assert Image.open(BytesIO(first)).size == (512, 512)
    # the encrypted file is gone: the same frame and window still render, from the cache only
    (image_store / instance.storage_path).unlink()
    assert frame_render(instance, 0, 40, 80, "png") == first
    with pytest.raises(UnsupportedImage, match="cannot be read"):
        frame_render(instance, 0, 75, 215, "png")


def test_jpeg_and_colour(chicago):
    (ct,) = receive(chicago, ct_series(count=1).part10()[0])
    assert Image.open(BytesIO(frame_render(ct, 0, 40, 400, "jpeg"))).format == "JPEG"
    rgb = open(get_testdata_file("SC_rgb_rle_2frame.dcm"), "rb").read()  # noqa: SIM115
    (colour,) = receive(chicago, rgb)
    second = Image.open(BytesIO(frame_render(colour, 1)))
    assert (second.mode, second.size) == ("RGB", (100, 100))


def test_jpeg_lossless_renders_now_that_pylibjpeg_decodes_it(chicago):
    # (issue #12: JPEG Lossless used to get 415; pylibjpeg-libjpeg decodes it, so it is drawn)
    path = get_testdata_file("JPGLosslessP14SV1_1s_1f_8b.dcm")
    lossless = open(path, "rb").read()  # noqa: SIM115
    (instance,) = receive(chicago, lossless)
    drawn = pixels(frame_render(instance))
    expected = pydicom.dcmread(path)
    assert drawn.shape[:2] == (expected.Rows, expected.Columns) and drawn.std() > 0


# --- the page -----------------------------------------------------------------------------------


@pytest.fixture
def chicago_head_ct(chicago) -> Study:
    series = ct_series(count=5, accession="ACC-VIEW-1", patient_id="MRN-4711", study_time="031500")
    receive(chicago, *series.part10())
    return Study.objects.get(study_instance_uid=series.study_uid)


def test_viewer_shows_the_study_in_the_facilitys_time(client, ops_omar, chicago_head_ct):
    client.force_login(ops_omar)
    page = client.get(f"/studies/{chicago_head_ct.pk}/viewer/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-theme="dark"' in html  # a reading-room page, whoever opens it
    for text in ("QUINLAN, JANE", "MRN-4711", "ACC-VIEW-1", "CT HEAD WO CONTRAST", "Lakeshore Medical"):
        assert text in html
    # 03:15 at the facility (the modality's local time) is 09:15 UTC on 1 March (CST, UTC−6)
    assert "2025-03-01 03:15 CST" in html and "2025-03-01 09:15 UTC" in html
    config = page.context["viewer_config"]
    (series,) = config["series"]
    assert series["count"] == 5
    assert [(number, frames) for _, number, frames in series["instances"]] == [(n, 1) for n in range(1, 6)]
    assert config["seriesBase"] == f"/dicomweb/studies/{chicago_head_ct.study_instance_uid}/series/"
    assert '<script id="viewer-config" type="application/json">' in html
    assert "readroom/viewer.js" in html


def test_opening_the_viewer_is_audited(client, ops_omar, chicago_head_ct):
    client.force_login(ops_omar)
    client.get(f"/studies/{chicago_head_ct.pk}/viewer/")
    read = LogEntry.objects.get_for_object(chicago_head_ct).filter(action=LogEntry.Action.ACCESS).get()
    assert read.actor == ops_omar
    assert read.additional_data["patient_id"] == chicago_head_ct.patient_id


def test_viewer_is_404_for_those_who_may_not_see_the_study(client, admin_lakeview, mso_mary, chicago_head_ct):
    for outsider in (admin_lakeview, mso_mary):
        client.force_login(outsider)
        assert client.get(f"/studies/{chicago_head_ct.pk}/viewer/").status_code == 404
    assert not LogEntry.objects.filter(action=LogEntry.Action.ACCESS).exists()
    client.logout()
    assert client.get(f"/studies/{chicago_head_ct.pk}/viewer/").status_code == 302  # to sign in


def test_only_this_origin_may_frame_the_viewer_and_never_a_refusal(
    client, ops_omar, admin_lakeview, chicago_head_ct
):
    """The report editor's images pane (docs/viewer.md "One reading screen") frames the viewer: its
    page may be framed by this origin alone; a 404 for another facility's study, and every other
    page, stays unframeable (a browser shows nothing in the pane)."""
    # given the viewer page of a study the user may see
    client.force_login(ops_omar)
    shown = client.get(f"/studies/{chicago_head_ct.pk}/viewer/")
    # then this origin may frame it, no other
    assert shown.status_code == 200
    assert shown["X-Frame-Options"] == "SAMEORIGIN"
    assert "frame-ancestors 'self'" in shown["Content-Security-Policy"]
    assert "'unsafe-inline'" not in shown["Content-Security-Policy"]
    assert client.get(f"/studies/{chicago_head_ct.pk}/open/")["X-Frame-Options"] == "SAMEORIGIN"
    # and a page that is not the pane's is never framed
    worklist = client.get("/operations/interfaces/")
    assert (
        worklist["X-Frame-Options"] == "DENY"
        and "frame-ancestors 'none'" in worklist["Content-Security-Policy"]
    )
    # when another facility's user asks for it, the 404 may not be framed either
    client.force_login(admin_lakeview)
    for url in (f"/studies/{chicago_head_ct.pk}/viewer/", f"/studies/{chicago_head_ct.pk}/open/"):
        refused = client.get(url)
        assert refused.status_code == 404
        assert refused["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in refused["Content-Security-Policy"]


def test_facility_admin_and_director_open_their_studies(
    client, verified_client, admin_chicago, director_dana, chicago_head_ct
):
    client.force_login(admin_chicago)
    assert client.get(f"/studies/{chicago_head_ct.pk}/viewer/").status_code == 200
    director = verified_client(director_dana)
    assert director.get(f"/studies/{chicago_head_ct.pk}/viewer/").status_code == 200


def test_rendered_frames_are_audited_once_per_study_not_per_frame(client, ops_omar, chicago_head_ct):
    client.force_login(ops_omar)
    base = f"/dicomweb/studies/{chicago_head_ct.study_instance_uid}/series/"
    for instance in Instance.objects.filter(series__study=chicago_head_ct).select_related("series"):
        sop_url = f"{base}{instance.series.series_instance_uid}/instances/{instance.sop_instance_uid}"
        response = client.get(f"{sop_url}/frames/1/rendered", {"window": "40,80"})
        assert response.status_code == 200 and response["Content-Type"] == "image/png"
        assert response["Cache-Control"] == "no-store, private"
    reads = LogEntry.objects.get_for_object(chicago_head_ct).filter(action=LogEntry.Action.ACCESS)
    assert reads.count() == 1


def test_a_study_without_images_says_so(client, ops_omar, chicago):
    empty = Study.objects.create(facility=chicago, study_instance_uid="1.2.3.4.5", accession_number="EMPTY1")
    client.force_login(ops_omar)
    page = client.get(f"/studies/{empty.pk}/viewer/")
    assert page.status_code == 200 and "No images yet" in page.content.decode()
