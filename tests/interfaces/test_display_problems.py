"""An accepted image whose pixel data later proves undecodable is flagged on the study page and
listed on the operations desk (issue #12, docs/viewer.md): never silently unreadable.

The image is real: pydicom's JPEG Lossless test file as three frames, the third a JPEG header
and noise. Receipt decodes frame 1 only (``imaging.transcoding.pixel_problem``), so it is accepted;
the third frame fails when it is first rendered."""

from __future__ import annotations

from io import BytesIO

import pytest
from django.core.cache import cache, caches
from pydicom import dcmread
from pydicom.encaps import encapsulate, get_frame

from imaging.models import Instance, Study
from interfaces.dicom.receive import dicom_instance_receive
from tests.dicom_data import part10_bytes
from tests.interfaces.test_dicomweb_syntaxes import JPEG_LOSSLESS, pydicom_file


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()
    yield
    cache.clear()
    caches["frames"].clear()


def three_frames_the_last_broken() -> bytes:
    ds = dcmread(BytesIO(pydicom_file(JPEG_LOSSLESS)))
    good = get_frame(ds.PixelData, 0, number_of_frames=1)
    ds.PixelData = encapsulate([good, good, good[:20] + b"\x12" * 200])
    ds.NumberOfFrames = 3
    ds.InstanceNumber = 7
    ds.SeriesNumber = 3
    return part10_bytes(ds)


def test_an_image_that_proves_undecodable_is_flagged_on_the_study_and_for_operations(
    client, ops_omar, admin_chicago, chicago, lakeview, image_store
):
    # given the image accepted through the one receive path (its first frame decodes)
    result = dicom_instance_receive(facility=chicago, part10=three_frames_the_last_broken())
    assert result.ok, result.reason
    instance = Instance.objects.get(pk=result.recorded.instance_id)
    study = Study.objects.get(pk=result.recorded.study_id)
    url = (
        f"/dicomweb/studies/{study.study_instance_uid}/series/{instance.series.series_instance_uid}"
        f"/instances/{instance.sop_instance_uid}/frames"
    )
    client.force_login(admin_chicago)
    assert client.get(f"{url}/1/rendered").status_code == 200
    assert Instance.objects.get(pk=instance.pk).display_problem == ""  # nothing wrong seen yet

    # when the broken frame is first rendered (a viewer scrolling to it), and again
    assert client.get(f"{url}/3/rendered").status_code == 422
    first = Instance.objects.get(pk=instance.pk)
    assert "pixel data is broken" in first.display_problem and first.display_problem_at is not None
    assert client.get(f"{url}/3/rendered?window=40,80").status_code == 422
    assert Instance.objects.get(pk=instance.pk).display_problem_at == first.display_problem_at  # kept once

    # then the study page says how many images cannot be displayed, which, and why
    client.force_login(ops_omar)
    page = client.get(f"/studies/{study.pk}/viewer/").content.decode()
    assert "1 image cannot be displayed:" in page
    assert "series 3 image 7 (the JPEG Lossless" in page

    # and the operations desk lists it with its study and reason
    desk = client.get("/operations/worklist/").content.decode()
    assert 'data-testid="display-problem-row"' in desk and instance.sop_instance_uid in desk
    assert "Images that cannot be displayed (1)" in desk
    assert (
        "Images that cannot be displayed (0)"
        in client.get("/operations/worklist/?facility=WI-LAKEVIEW").content.decode()
    )


def test_an_object_without_pixels_and_a_missing_frame_are_not_display_problems(
    client, admin_chicago, chicago, image_store
):
    result = dicom_instance_receive(facility=chicago, part10=pydicom_file(JPEG_LOSSLESS))
    instance = Instance.objects.get(pk=result.recorded.instance_id)
    study = instance.series.study
    client.force_login(admin_chicago)
    url = (
        f"/dicomweb/studies/{study.study_instance_uid}/series/{instance.series.series_instance_uid}"
        f"/instances/{instance.sop_instance_uid}"
    )
    assert client.get(f"{url}/frames/2/rendered").status_code == 404
    assert Instance.objects.get(pk=instance.pk).display_problem == ""
