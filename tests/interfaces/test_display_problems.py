"""An accepted image whose pixel data later proves undecodable is flagged on the study page and
listed on the operations desk (issue #12, docs/viewer.md): never silently unreadable.

The image is real: pydicom's JPEG Lossless test file as three frames, the third a JPEG header
and noise. Receipt decodes frame 1 only (``imaging.transcoding.pixel_problem``), so it is accepted;
the third frame fails when it is first rendered, or when the decode check that runs after the
image is indexed (on commit) decodes its last frame."""

from __future__ import annotations

import os
import shutil
import subprocess
from io import BytesIO

import pytest
from django.core.cache import cache, caches
from pydicom import dcmread
from pydicom.encaps import encapsulate, get_frame
from pydicom.uid import JPEGLosslessSV1

from imaging.models import Instance, Study
from interfaces.dicom.receive import dicom_instance_receive
from tests.dicom_data import part10_bytes
from tests.interfaces.test_dicomweb_syntaxes import JPEG_LOSSLESS, pydicom_file
from tests.net import wait_until


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


# --- the background decode check after indexing (no one has rendered anything) --------------------


def test_a_received_image_whose_last_frame_is_broken_is_flagged_before_anyone_renders_it(
    client, ops_omar, chicago, image_store, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as queued:
        result = dicom_instance_receive(facility=chicago, part10=three_frames_the_last_broken())
    assert result.ok, result.reason
    assert len(queued) == 1  # the check is queued on commit, not run in the C-STORE answer
    instance = Instance.objects.get(pk=result.recorded.instance_id)
    assert instance.display_checked_at is not None
    assert instance.display_problem.startswith("frame 3: the JPEG Lossless")
    assert "pixel data is broken" in instance.display_problem

    client.force_login(ops_omar)
    page = client.get(f"/studies/{result.recorded.study_id}/viewer/").content.decode()
    assert "1 image cannot be displayed:" in page and "series 3 image 7 (frame 3: the JPEG Lossless" in page

    # a redelivered task finds it checked and decodes nothing
    from imaging.services import instance_display_check

    assert instance_display_check(instance_id=instance.pk) == ""
    assert Instance.objects.get(pk=instance.pk).display_problem == instance.display_problem


def test_a_good_image_is_checked_and_not_flagged(chicago, image_store, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        result = dicom_instance_receive(facility=chicago, part10=pydicom_file(JPEG_LOSSLESS))
    instance = Instance.objects.get(pk=result.recorded.instance_id)
    assert instance.display_checked_at is not None and instance.display_problem == ""


def test_the_check_can_be_turned_off(chicago, image_store, settings, django_capture_on_commit_callbacks):
    settings.READROOM_DECODE_CHECK = False
    with django_capture_on_commit_callbacks(execute=True) as queued:
        result = dicom_instance_receive(facility=chicago, part10=three_frames_the_last_broken())
    assert queued == []
    instance = Instance.objects.get(pk=result.recorded.instance_id)
    assert instance.display_checked_at is None and instance.display_problem == ""


def test_an_image_whose_check_was_lost_is_checked_by_the_sweep(
    chicago, image_store, django_capture_on_commit_callbacks
):
    """The check's task is queued on commit; lost with a killed worker or a failed publish, the
    periodic sweep queues it again, ten minutes on, within a day."""
    from datetime import timedelta

    from imaging.services import instances_display_check_lost_requeue
    from radiology.schedule import PERIODIC_TASKS

    # given an image stored, its check's task lost (the on-commit publish never ran)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        result = dicom_instance_receive(facility=chicago, part10=three_frames_the_last_broken())
    assert result.ok and len(queued) == 1
    instance = Instance.objects.get(pk=result.recorded.instance_id)
    assert instance.display_checked_at is None
    # a check only late is left to its task; one more than a day old is no longer retried
    assert instances_display_check_lost_requeue(now=instance.received_at + timedelta(minutes=5)) == 0
    assert instances_display_check_lost_requeue(now=instance.received_at + timedelta(hours=25)) == 0
    assert Instance.objects.get(pk=instance.pk).display_checked_at is None
    # when the sweep runs ten minutes on, the image is checked and its broken frame flagged
    assert instances_display_check_lost_requeue(now=instance.received_at + timedelta(minutes=11)) == 1
    checked = Instance.objects.get(pk=instance.pk)
    assert checked.display_checked_at is not None
    assert checked.display_problem.startswith("frame 3: the JPEG Lossless")
    # and once checked it is not queued again
    assert instances_display_check_lost_requeue(now=instance.received_at + timedelta(minutes=20)) == 0
    entry = PERIODIC_TASKS["display-checks-lost-requeue"]
    assert entry.task == "imaging.tasks.instances_display_check_lost_requeue"
    assert entry.every == timedelta(minutes=10)


def test_a_lossless_resend_in_another_syntax_clears_the_flag_and_is_checked_anew(
    chicago, image_store, django_capture_on_commit_callbacks
):
    from pydicom.uid import ExplicitVRLittleEndian

    from imaging.transcoding import instance_transcode

    jpeg = pydicom_file(JPEG_LOSSLESS)
    with django_capture_on_commit_callbacks(execute=True):
        result = dicom_instance_receive(facility=chicago, part10=jpeg)
    pk = result.recorded.instance_id
    # flagged from the first file (e.g. its storage could not be read when it was checked)
    Instance.objects.filter(pk=pk).update(display_problem="the stored file cannot be read: gone")

    with django_capture_on_commit_callbacks(execute=True):
        again = dicom_instance_receive(
            facility=chicago, part10=instance_transcode(jpeg, ExplicitVRLittleEndian)
        )
    assert again.ok, again.reason
    instance = Instance.objects.get(pk=pk)
    assert instance.transfer_syntax_uid == ExplicitVRLittleEndian
    assert instance.display_problem == "" and instance.display_checked_at is not None


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed (apt-get install dcmtk)")
def test_storescu_of_the_broken_image_flags_it_after_the_commit_of_its_c_store(dicom_scp, tmp_path):
    # the real SCP commits outside any test transaction: the check runs on that commit (inline here,
    # as in the embedded topology; in a worker otherwise)
    host, port, aet = dicom_scp
    path = tmp_path / "broken.dcm"
    path.write_bytes(three_frames_the_last_broken())
    sent = subprocess.run(
        ["storescu", "-xs", "-aet", "LAKESHORE_CT1", "-aec", aet, host, str(port), str(path)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "TCP_NODELAY": "1"},
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    # the SCP publishes its decode checks gathered (imaging.group_commit): at most 0.1 s later
    wait_until(lambda: Instance.objects.get().display_checked_at is not None, timeout=5)
    instance = Instance.objects.get()
    assert instance.transfer_syntax_uid == JPEGLosslessSV1
    assert instance.display_problem.startswith("frame 3: the JPEG Lossless")
