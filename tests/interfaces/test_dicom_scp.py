"""The Storage SCP with dcmtk as the modality (echoscu, storescu with TCP_NODELAY=1): stored
encrypted, indexed, idempotent, unknown callers refused, undecodable objects quarantined."""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import subprocess
import time
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread

from imaging.models import Instance, Order, Study
from imaging.storage import encrypted_read
from interfaces.models import DicomAssociation, QuarantinedObject
from interfaces.simulator import exam_random, series_datasets

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        shutil.which("storescu") is None, reason="dcmtk not installed (apt-get install dcmtk)"
    ),
]


def dcmtk(tool: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TCP_NODELAY": "1"}
    return subprocess.run([tool, *args], env=env, capture_output=True, text=True, timeout=120)


def association_closed(calling_ae_title: str, timeout: float = 10) -> DicomAssociation:
    """The SCP writes an association's counters when it ends, which is after the SCU already has
    its A-RELEASE response (and its exit code): wait for that write instead of racing it."""
    deadline = time.monotonic() + timeout
    while True:
        association = DicomAssociation.objects.get(calling_ae_title=calling_ae_title)
        if association.ended_at is not None or time.monotonic() > deadline:
            return association
        time.sleep(0.05)


def write_series(tmp_path: Path, *, slices: int = 5, accession: str | None = None, seed: int = 1) -> tuple:
    exam = exam_random(random.Random(seed), "CHI-L1", stroke_rate=0.0)
    if accession:
        exam = dataclasses.replace(exam, accession=accession)
    paths = []
    for ds in series_datasets(exam, slices=slices, size=128):
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return exam, paths


def test_echo_from_a_registered_modality(dicom_scp):
    host, port, aet = dicom_scp
    result = dcmtk("echoscu", "-aet", "LAKESHORE_CT1", "-aec", aet, host, str(port))
    assert result.returncode == 0, result.stderr
    assert association_closed("LAKESHORE_CT1").echoes == 1


def test_unknown_calling_ae_is_rejected_at_association(dicom_scp):
    host, port, aet = dicom_scp
    result = dcmtk("echoscu", "-aet", "ROGUE_CT", "-aec", aet, host, str(port))
    # then dcmtk reads an A-ASSOCIATE-RJ with its reason, not a dropped connection
    assert result.returncode != 0
    assert "Association Rejected" in result.stderr, result.stderr
    assert "Rejected Permanent" in result.stderr and "Calling AE Title Not Recognized" in result.stderr
    assert "Peer aborted" not in result.stderr
    refused = DicomAssociation.objects.get(calling_ae_title="ROGUE_CT")
    assert not refused.accepted and "not registered" in refused.rejection_reason


def test_wrong_called_ae_is_rejected_with_its_reason(dicom_scp, tmp_path):
    host, port, _ = dicom_scp
    _, paths = write_series(tmp_path, slices=1)
    # a registered modality that addresses another AE title (a PACS's, a typo)
    result = dcmtk("storescu", "-aet", "LAKESHORE_CT1", "-aec", "ORTHANC", host, str(port), str(paths[0]))
    assert result.returncode != 0
    assert "Rejected Permanent" in result.stderr and "Called AE Title Not Recognized" in result.stderr, (
        result.stderr
    )
    refused = DicomAssociation.objects.get(calling_ae_title="LAKESHORE_CT1")
    assert not refused.accepted and "'ORTHANC'" in refused.rejection_reason
    assert not Instance.objects.exists()


def test_series_is_stored_encrypted_and_indexed(dicom_scp, tmp_path, image_store):
    host, port, aet = dicom_scp
    exam, paths = write_series(tmp_path, slices=5)
    result = dcmtk("storescu", "-aet", "LAKESHORE_CT1", "-aec", aet, host, str(port), *map(str, paths))
    assert result.returncode == 0, result.stderr
    study = Study.objects.get(study_instance_uid=exam.study_uid)
    assert (
        study.facility.code,
        study.accession_number,
        study.number_of_instances,
        study.number_of_series,
    ) == ("CHI-L1", exam.accession, 5, 1)
    assert study.modalities == exam.procedure.modality
    assert study.patient.mrn == exam.mrn  # from the header until the order arrives
    instance = Instance.objects.filter(series__study=study).order_by("instance_number").first()
    sent = paths_by_uid(paths)[instance.sop_instance_uid].read_bytes()
    # at rest: not the bytes that were sent; decrypted: exactly them
    on_disk = (image_store / instance.storage_path).read_bytes()
    assert exam.mrn.encode() not in on_disk
    assert dcmread(BytesIO(encrypted_read(instance.storage_path))).SOPInstanceUID == instance.sop_instance_uid
    assert len(encrypted_read(instance.storage_path)) >= len(sent) - 200  # same dataset, meta may differ
    association = association_closed("LAKESHORE_CT1")
    assert association.instances_stored == 5 and association.ended_at is not None


def paths_by_uid(paths):
    return {p.stem: p for p in paths}


def test_resending_is_idempotent(dicom_scp, tmp_path):
    host, port, aet = dicom_scp
    exam, paths = write_series(tmp_path, slices=3)
    for _ in range(2):
        assert (
            dcmtk(
                "storescu", "-aet", "LAKESHORE_CT1", "-aec", aet, host, str(port), *map(str, paths)
            ).returncode
            == 0
        )
    study = Study.objects.get(study_instance_uid=exam.study_uid)
    assert study.number_of_instances == 3
    assert Instance.objects.filter(series__study=study).count() == 3


def test_images_before_order_then_order_links_them(dicom_scp, tmp_path, hl7_listener):
    from tests import hl7_data
    from tests.interfaces.test_hl7_listener import exchange

    host, port, aet = dicom_scp
    exam, paths = write_series(tmp_path, slices=2, accession="A77001")
    assert (
        dcmtk("storescu", "-aet", "LAKESHORE_CT1", "-aec", aet, host, str(port), *map(str, paths)).returncode
        == 0
    )
    exchange(hl7_listener, hl7_data.orm(accession="A77001", mrn="MRN-REAL", reason="CODE STROKE"))
    study = Study.objects.get(study_instance_uid=exam.study_uid)
    assert study.order == Order.objects.get(accession_number="A77001")
    assert study.patient.mrn == "MRN-REAL" and study.is_stroke


def test_undecodable_object_is_quarantined_and_association_goes_on(dicom_scp, tmp_path):
    host, port, aet = dicom_scp
    exam, paths = write_series(tmp_path, slices=2)
    # a dataset whose header cannot be indexed (no Study Instance UID) between two good ones
    broken = dcmread(paths[0])
    del broken.StudyInstanceUID
    broken.SOPInstanceUID = broken.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.1381.999"
    broken_path = tmp_path / "broken.dcm"
    broken.save_as(broken_path, enforce_file_format=True)
    result = dcmtk(
        "storescu",
        "-aet",
        "LAKESHORE_CT1",
        "-aec",
        aet,
        "--no-halt",  # the modality goes on after a failed instance, in the same association
        "-v",
        host,
        str(port),
        str(paths[0]),
        str(broken_path),
        str(paths[1]),
    )
    # the modality was told 0xC210 for the broken one and success for the others
    responses = [line for line in result.stderr.splitlines() if "Received Store Response" in line]
    assert responses == [
        "I: Received Store Response (Success)",
        "I: Received Store Response (Error: CannotUnderstand)",
        "I: Received Store Response (Success)",
    ]
    assert Study.objects.get(study_instance_uid=exam.study_uid).number_of_instances == 2
    quarantined = QuarantinedObject.objects.get()
    assert "StudyInstanceUID" in quarantined.reason
    assert len(encrypted_read(quarantined.storage_path)) > 0
    association = association_closed("LAKESHORE_CT1")
    assert (association.instances_stored, association.instances_failed) == (2, 1)


def test_study_uid_of_another_facility_is_refused(dicom_scp, tmp_path, lakeview_interfaces):
    host, port, aet = dicom_scp
    exam, paths = write_series(tmp_path, slices=1)
    assert (
        dcmtk("storescu", "-aet", "LAKESHORE_CT1", "-aec", aet, host, str(port), str(paths[0])).returncode
        == 0
    )
    # the same Study UID arriving from Lakeview's modality must not join Chicago's study
    other = dcmread(paths[0])
    other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.1381.998"
    other_path = tmp_path / "other.dcm"
    other.save_as(other_path, enforce_file_format=True)
    dcmtk("storescu", "-aet", "LAKEVIEW_MR", "-aec", aet, host, str(port), str(other_path))
    study = Study.objects.get(study_instance_uid=exam.study_uid)
    assert study.facility.code == "CHI-L1" and study.number_of_instances == 1
    assert "another facility" in QuarantinedObject.objects.get().reason


RETIRED_US = "1.2.840.10008.5.1.4.1.1.6"  # Ultrasound Image Storage (Retired)


def _retired_us_file(tmp_path: Path) -> tuple[str, Path]:
    """An image as an older ultrasound cart writes it: the retired US SOP class."""
    _, (path,) = write_series(tmp_path, slices=1, seed=3)
    ds = dcmread(path)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = RETIRED_US
    ds.Modality = "US"
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID), path


def test_retired_us_classes_are_accepted_only_from_senders_configured_for_them(dicom_scp, tmp_path):
    from facilities.models import DicomSender

    host, port, aet = dicom_scp
    sop_uid, path = _retired_us_file(tmp_path)
    # given a sender not configured for it: the context is refused at association, nothing stored
    refused = dcmtk("storescu", "-R", "-aet", "LAKESHORE_CT1", "-aec", aet, host, str(port), str(path))
    assert refused.returncode != 0 or "No presentation context" in refused.stderr, refused.stderr
    assert not Instance.objects.filter(sop_instance_uid=sop_uid).exists()
    # when operations allow the retired class for this cart, the same file is stored and indexed
    DicomSender.objects.filter(ae_title="LAKESHORE_CT1").update(retired_sop_classes=[RETIRED_US])
    stored = dcmtk("storescu", "-R", "-aet", "LAKESHORE_CT1", "-aec", aet, host, str(port), str(path))
    assert stored.returncode == 0, stored.stderr
    instance = Instance.objects.get(sop_instance_uid=sop_uid)
    assert instance.sop_class_uid == RETIRED_US
