"""Issue #15 item 3: a second object with a SOP Instance UID we hold already but other content is
refused over a real dcmtk association (0xA900 with an error comment), quarantined and audited; the
stored object stays byte-identical. The same bytes again stay idempotent."""

from __future__ import annotations

import shutil
from io import BytesIO

import numpy as np
import pytest
from pydicom import dcmread

from imaging.models import Instance, Study
from imaging.storage import encrypted_read
from interfaces.models import DicomAssociation, QuarantinedObject
from tests.interfaces.test_dicom_scp import dcmtk, write_series
from tests.net import wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed"),
]


def test_different_object_with_a_stored_sop_uid_is_refused_and_the_first_kept(dicom_scp, tmp_path):
    from auditlog.models import LogEntry

    host, port, aet = dicom_scp
    exam, paths = write_series(tmp_path, slices=1)
    first = paths[0]

    def store(path, *options: str):
        return dcmtk("storescu", *options, "-aet", "LAKESHORE_CT1", "-aec", aet, host, str(port), str(path))

    assert store(first).returncode == 0
    instance = Instance.objects.get()
    stored_before = encrypted_read(instance.storage_path)
    assert dcmread(BytesIO(stored_before)).PixelData == dcmread(first).PixelData
    # the same object again: idempotent, Success
    assert store(first).returncode == 0
    assert not QuarantinedObject.objects.exists()
    # a different object (other pixels) under the same SOP Instance UID
    other = dcmread(first)
    other.PixelData = (np.asarray(other.pixel_array) + 7).astype(other.pixel_array.dtype).tobytes()
    second = tmp_path / "second.dcm"
    other.save_as(second, enforce_file_format=True)
    assert second.read_bytes() != first.read_bytes()
    result = store(second, "-d")  # debug: dcmtk dumps the C-STORE response, Error Comment included
    # then the modality hears a 0xA900 failure with a reason …
    output = result.stdout + result.stderr
    assert "0xa900" in output.lower(), output
    assert "already stored with different content" in output, output  # the Error Comment
    # … the stored object is byte-identical, the index unchanged …
    instance.refresh_from_db()
    assert encrypted_read(instance.storage_path) == stored_before
    assert Instance.objects.count() == 1
    assert Study.objects.get(study_instance_uid=exam.study_uid).number_of_instances == 1
    # … the newcomer is kept in quarantine (what was received is never dropped), shown to operations
    quarantined = QuarantinedObject.objects.get()
    assert quarantined.sop_instance_uid == instance.sop_instance_uid
    assert "different content" in quarantined.reason
    assert dcmread(BytesIO(encrypted_read(quarantined.storage_path))).PixelData == other.PixelData
    # … and the refusal is audited
    audit = LogEntry.objects.get(object_pk=str(instance.pk), content_type__model="instance")
    assert "duplicate_refused" in audit.changes_dict
    # … and counted as a failure on the association (the operations page's DICOM errors)
    wait_until(lambda: DicomAssociation.objects.filter(instances_failed=1, ended_at__isnull=False).exists())


@pytest.mark.parametrize("change", ["rows", "frames"])
def test_pixel_data_contradicting_its_dimensions_is_refused(dicom_scp, tmp_path, change):
    host, port, aet = dicom_scp
    _, paths = write_series(tmp_path, slices=1, seed=5)
    claimed = dcmread(paths[0])
    if change == "rows":
        claimed.Rows = claimed.Rows * 4  # claims 4 × the pixels it carries
    else:
        claimed.NumberOfFrames = 40000  # a "4 GB" claim in a small object
    bad = tmp_path / "bad.dcm"
    claimed.save_as(bad, enforce_file_format=True)
    result = dcmtk("storescu", "-d", "-aet", "LAKESHORE_CT1", "-aec", aet, host, str(port), str(bad))
    output = result.stdout + result.stderr
    assert "0xa900" in output.lower(), output
    assert not Instance.objects.exists()
    assert "Rows x Columns" in QuarantinedObject.objects.get().reason


def test_truncated_object_is_refused(dicom_scp, tmp_path):
    """dcmtk will not send a file cut short, so the modality here is pynetdicom's SCU sending the
    bytes as they would arrive from a modality that lost the end of its buffer."""
    from pynetdicom import AE

    host, port, aet = dicom_scp
    _, paths = write_series(tmp_path, slices=1, seed=6)
    ds = dcmread(paths[0])
    ae = AE(ae_title="LAKESHORE_CT1")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate(host, port, ae_title=aet)
    assert assoc.is_established
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(paths[0].read_bytes()[:-2000])  # the file meta intact, the pixel data cut short
    try:
        status = assoc.send_c_store(cut)  # sent from the file as it is, without decoding it
    finally:
        assoc.release()
    assert status.Status == 0xA900, status
    # (pynetdicom's SCU sends the short value with its true length: refused as contradicting the
    # dimensions; a declared length beyond the received bytes is the STOW test's case)
    assert str(status.get("ErrorComment", "")).startswith("pixel data is 30906 bytes")
    assert not Instance.objects.exists()


@pytest.mark.django_db
def test_stow_of_a_different_object_with_a_stored_sop_uid_is_409_and_the_first_kept(
    client, admin_chicago, chicago, image_store
):
    from tests.dicom_data import ct_series, part10_bytes
    from tests.interfaces.test_dicomweb import FAILED_SOP_SEQUENCE, failure_reasons, multipart, stow

    client.force_login(admin_chicago)
    first = ct_series(count=1).datasets[0]
    assert stow(client, multipart(part10_bytes(first))).status_code == 200
    instance = Instance.objects.get()
    stored_before = encrypted_read(instance.storage_path)
    assert stow(client, multipart(part10_bytes(first))).status_code == 200  # the same again: idempotent
    changed = first.copy()
    changed.PixelData = bytes(b ^ 0x01 for b in first.PixelData)
    answer = stow(client, multipart(part10_bytes(changed)))
    assert answer.status_code == 409
    body = answer.json()
    assert failure_reasons(body) == [0xA900]
    failed = body[FAILED_SOP_SEQUENCE]["Value"][0]
    assert failed["00081155"]["Value"] == [str(first.SOPInstanceUID)]  # ReferencedSOPInstanceUID
    instance.refresh_from_db()
    assert encrypted_read(instance.storage_path) == stored_before
    assert "different content" in QuarantinedObject.objects.get().reason
    # an object cut short in transit (the pixel data declares more than arrived) is refused too
    other = ct_series(count=1, accession="ACC2").datasets[0]
    answer = stow(client, multipart(part10_bytes(other)[:-3000]))
    assert answer.status_code == 409 and failure_reasons(answer.json()) == [0xA900]
    assert QuarantinedObject.objects.filter(reason__startswith="object truncated").exists()
    assert not Instance.objects.filter(sop_instance_uid=str(other.SOPInstanceUID)).exists()
