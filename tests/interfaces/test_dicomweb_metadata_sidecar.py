"""WADO-RS metadata from the side-car kept beside each image (interfaces/dicom/metadata_sidecar.py,
docs/viewer.md "Metadata side-car"): made by the decode check after the commit, encrypted at rest,
the same JSON the file gives, ignored when the index row says the file changed, and made again by
the first request that finds none."""

from __future__ import annotations

import json
from io import BytesIO

import pytest
from django.test import Client
from pydicom import dcmread

from accounts.tokens import api_token_issue
from imaging.models import Instance
from imaging.storage import _resolve, encrypted_read, encrypted_write, metadata_sidecar_path
from interfaces.dicom.metadata_sidecar import instance_metadata_relative
from interfaces.dicom.web_json import dataset_json
from tests.dicom_data import ct_series
from tests.interfaces.test_dicomweb import stored_in

pytestmark = pytest.mark.django_db(transaction=True)  # the decode check runs on commit


def metadata(client: Client, series) -> tuple[bytes, list[dict]]:
    response = client.get(
        f"/dicomweb/studies/{series.study_uid}/series/{series.series_uid}/metadata",
        HTTP_ACCEPT="application/dicom+json",
    )
    assert response.status_code == 200, response.content
    return response.content, json.loads(response.content)


@pytest.fixture
def hospital(admin_chicago) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Token {api_token_issue(user=admin_chicago).key}")


@pytest.fixture
def series(chicago, image_store):
    ct = ct_series(count=3, accession="ACC-SIDECAR")
    stored_in(chicago, ct)
    return ct


def sidecar(instance: Instance) -> str:
    return encrypted_read(metadata_sidecar_path(instance.storage_path)).decode()


def test_the_decode_check_keeps_an_encrypted_sidecar_and_metadata_is_the_files_own(hospital, series):
    instances = list(Instance.objects.order_by("instance_number"))
    # the images' decode check (queued on commit) kept a side-car beside each file
    for instance in instances:
        made_from, _, text = sidecar(instance).partition("\n")
        assert json.loads(made_from)["size"] == instance.size_bytes
        # the very JSON the file itself gives
        assert text == instance_metadata_relative(instance, encrypted_read(instance.storage_path))
        # encrypted at rest like the image: no patient name (ct_series's) or UID in the bytes on disk
        raw = _resolve(metadata_sidecar_path(instance.storage_path)).read_bytes()
        assert instance.sop_instance_uid.encode() not in raw and b"QUINLAN^JANE" not in raw
    # and the metadata served from them is, item for item, what the files give (as the metadata was
    # made before side-cars: each whole file to JSON, its bulk data under the request's instance URL)
    _body, items = metadata(hospital, series)
    assert len(items) == 3
    served = {item["00080018"]["Value"][0]: item for item in items}
    for instance in instances:
        url = (
            f"http://testserver/dicomweb/studies/{series.study_uid}/series/{series.series_uid}"
            f"/instances/{instance.sop_instance_uid}"
        )
        ds = dcmread(BytesIO(encrypted_read(instance.storage_path)))
        expected = dataset_json(
            ds, transfer_syntax_uid=instance.transfer_syntax_uid, bulkdata_url=f"{url}/bulkdata"
        )
        assert served[instance.sop_instance_uid] == expected
        assert served[instance.sop_instance_uid]["7FE00010"]["BulkDataURI"] == f"{url}/bulkdata/7FE00010"


def test_a_sidecar_is_used_while_it_matches_the_row_and_made_again_when_it_does_not(hospital, series):
    instance = Instance.objects.order_by("instance_number").first()
    made_from, _, text = sidecar(instance).partition("\n")
    # a side-car that matches the row is what is served (a marker shows it is read, not the file)
    marked = json.loads(text)
    marked["00081030"] = {"vr": "LO", "Value": ["FROM THE SIDECAR"]}
    encrypted_write(
        metadata_sidecar_path(instance.storage_path), f"{made_from}\n{json.dumps(marked)}".encode()
    )
    _body, items = metadata(hospital, series)
    assert [
        i["00081030"]["Value"] for i in items if i["00080018"]["Value"] == [instance.sop_instance_uid]
    ] == [["FROM THE SIDECAR"]]
    # when the row says the file changed (a re-send: another size), the side-car is not trusted
    Instance.objects.filter(pk=instance.pk).update(size_bytes=instance.size_bytes + 2)
    _body, items = metadata(hospital, series)
    ours = next(i for i in items if i["00080018"]["Value"] == [instance.sop_instance_uid])
    assert ours.get("00081030", {}).get("Value") != ["FROM THE SIDECAR"]
    # and it is made again from the file, for the row as it is now
    instance.refresh_from_db()
    assert json.loads(sidecar(instance).partition("\n")[0])["size"] == instance.size_bytes


def test_a_missing_sidecar_is_made_by_the_first_request(hospital, series, settings):
    instance = Instance.objects.order_by("instance_number").first()
    path = _resolve(metadata_sidecar_path(instance.storage_path))
    path.unlink()  # an image stored before side-cars existed, or one whose check was lost
    first, _ = metadata(hospital, series)
    assert path.exists()
    again, _ = metadata(hospital, series)
    assert again == first


def test_a_sidecar_is_never_flushed_to_disk_and_a_torn_one_is_made_again(
    hospital, series, settings, monkeypatch
):
    import os

    from interfaces.dicom.metadata_sidecar import metadata_sidecar_write

    # given durable image writes, and a record of every flush (the real ones still run)
    settings.READROOM_STORAGE_FSYNC = True
    flushed = []
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda fd, real=real: (flushed.append(fd), real(fd))[1])
    instance = Instance.objects.order_by("instance_number").first()
    path = _resolve(metadata_sidecar_path(instance.storage_path))
    # when its side-car is made (a cache: it never waits on the disk beside the images' flushes)
    metadata_sidecar_write(instance, encrypted_read(instance.storage_path))
    # then nothing was flushed
    assert flushed == []
    # and a side-car a power cut tore (its GCM tag fails) is not served but made again, whole
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    _body, items = metadata(hospital, series)
    assert instance.sop_instance_uid in {i["00080018"]["Value"][0] for i in items}
    assert path.read_bytes() != whole[: len(whole) // 2]
    assert sidecar(instance).partition("\n")[2] == instance_metadata_relative(
        instance, encrypted_read(instance.storage_path)
    )
    # (the durable image writes still flush: the same record sees the image's own)
    encrypted_write("FAC/flushed.dcm", b"DICM")
    assert flushed


def test_another_facilitys_user_gets_no_metadata_and_no_sidecar_is_read(series, admin_lakeview):
    client = Client(HTTP_AUTHORIZATION=f"Token {api_token_issue(user=admin_lakeview).key}")
    response = client.get(
        f"/dicomweb/studies/{series.study_uid}/series/{series.series_uid}/metadata",
        HTTP_ACCEPT="application/dicom+json",
    )
    assert response.status_code == 404
    assert b"ACC-SIDECAR" not in response.content
