"""The Storage SCP writing into an S3-API object store (moto in server mode on a free port): a
C-STORE success means the encrypted object is in the bucket and its row committed; with the store
away the modality gets 0xA700 and nothing is indexed."""

from __future__ import annotations

import pytest

from imaging import object_store, storage
from imaging.storage import encrypted_read
from tests.interfaces.test_dicom_scp import dcmtk, write_series
from tests.net import free_port
from tests.s3 import object_raw


@pytest.mark.django_db(transaction=True)
def test_a_c_store_success_means_the_object_is_in_the_bucket_and_its_row_committed(
    moto_server, s3_bucket, dicom_scp, tmp_path
):
    # given the SCP storing into the bucket
    from imaging.models import Instance

    host, port, aet = dicom_scp
    _exam, paths = write_series(tmp_path, slices=3, seed=16)
    # when a modality sends a short series
    result = dcmtk("storescu", "-aet", "LAKESHORE_CT1", "-aec", aet, host, str(port), *map(str, paths))
    # then every instance is indexed and its encrypted object is in the bucket
    assert result.returncode == 0, result.stderr
    instances = list(Instance.objects.all())
    assert len(instances) == 3
    for instance in instances:
        assert object_raw(moto_server, s3_bucket, instance.storage_path).startswith(storage.MAGIC)
        assert encrypted_read(instance.storage_path)[128:132] == b"DICM"


@pytest.mark.django_db(transaction=True)
def test_with_the_store_away_a_c_store_is_refused_and_nothing_is_indexed(
    s3_bucket, dicom_scp, tmp_path, settings
):
    from imaging.models import Instance

    settings.READROOM_S3_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    object_store.client_reset()
    host, port, aet = dicom_scp
    _exam, paths = write_series(tmp_path, slices=1, seed=17)
    result = dcmtk("storescu", "-aet", "LAKESHORE_CT1", "-aec", aet, host, str(port), *map(str, paths))
    # storescu reports the 0xA700 "out of resources" status; the modality will resend
    assert "0xa700" in (result.stdout + result.stderr).lower() or result.returncode != 0
    assert not Instance.objects.exists()
